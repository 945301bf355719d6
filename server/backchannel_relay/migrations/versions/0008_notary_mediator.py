"""notary mediator: the mediator a notarised proposal travels through

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # as participants.id

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The mediator's internal id on a commitment entry (None: no mediator). No foreign key:
    # SQLite could only add one by copying the whole table.
    op.add_column("notary_log", sa.Column("mediator_id", ID, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notary_log") as batch:
        batch.drop_column("mediator_id")
