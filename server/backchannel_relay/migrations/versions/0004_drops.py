"""drops: sealed-sender mailboxes for off-the-record channels

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # PRODUCT.md §7: on PostgreSQL off-the-record rows are UNLOGGED, so they never reach the
    # write-ahead log (nor a replica or a WAL archive); the price, stated: they do not survive a
    # crash of the database server. SQLite has no such tables: there secure_delete and the
    # sweep's truncating checkpoint do the same work.
    unlogged = ["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else []
    op.create_table(
        "drops",
        sa.Column("address", sa.LargeBinary(length=32), nullable=False),
        sa.Column("read_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
        sa.UniqueConstraint("read_hash"),
        prefixes=unlogged,
    )
    op.create_index("ix_drops_expires_at", "drops", ["expires_at"])
    op.create_table(
        "drop_messages",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("address", sa.LargeBinary(length=32), nullable=False),
        sa.Column("message_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["address"], ["drops.address"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address", "message_id"),
        sqlite_autoincrement=True,
        prefixes=unlogged,
    )
    op.create_index("ix_drop_messages_address", "drop_messages", ["address"])
    op.create_index("ix_drop_messages_expires_at", "drop_messages", ["expires_at"])


def downgrade() -> None:
    op.drop_table("drop_messages")
    op.drop_table("drops")
