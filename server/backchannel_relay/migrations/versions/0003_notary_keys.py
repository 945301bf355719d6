"""notary keys: content keys of timed proposals, released at their time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # as participants.id

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notary_keys",
        sa.Column("subject", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("release_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("submitter_id", ID, nullable=False),
        sa.ForeignKeyConstraint(["submitter_id"], ["participants.id"]),
        sa.PrimaryKeyConstraint("subject"),
    )


def downgrade() -> None:
    op.drop_table("notary_keys")
