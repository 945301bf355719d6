"""mailbox shares: what each sender has waiting in each recipient's mailbox

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The sender's internal id, so that deleting an envelope (acknowledged or expired) gives
    # back its sender's share. Envelopes stored before this revision have none and count for
    # no share. No foreign key: SQLite could only add one by copying the whole table.
    op.add_column("envelopes", sa.Column("sender_id", ID, nullable=True))
    op.create_table(
        "mailbox_shares",
        sa.Column("recipient_id", ID, nullable=False),
        sa.Column("sender_id", ID, nullable=False),
        sa.Column("queued_count", sa.Integer(), nullable=False),
        sa.Column("queued_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["recipient_id"], ["participants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["sender_id"], ["participants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("recipient_id", "sender_id"),
    )


def downgrade() -> None:
    op.drop_table("mailbox_shares")
    with op.batch_alter_table("envelopes") as batch:
        batch.drop_column("sender_id")
