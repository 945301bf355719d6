"""notary log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # as participants.id

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notary_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("subject", sa.LargeBinary(length=32), nullable=False),
        sa.Column("value", sa.LargeBinary(length=32), nullable=False),
        sa.Column("previous", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.Column("submitter_id", ID, nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["submitter_id"], ["participants.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("subject", "kind", "value"),
    )
    with op.batch_alter_table("notary_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notary_log_subject"), ["subject"], unique=False)
    op.create_table(
        "notary_addressees",
        sa.Column("subject", sa.LargeBinary(length=32), nullable=False),
        sa.Column("participant_id", ID, nullable=False),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"]),
        sa.PrimaryKeyConstraint("subject", "participant_id"),
    )


def downgrade() -> None:
    op.drop_table("notary_addressees")
    with op.batch_alter_table("notary_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notary_log_subject"))
    op.drop_table("notary_log")
