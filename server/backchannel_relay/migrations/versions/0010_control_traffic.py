"""control traffic: what each class lets control see of letters (envelope rows, sealed copies,
counts)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control_traffic",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("exercise", sa.String(64), sa.ForeignKey("exercises.name"), nullable=False),
        sa.Column("channel_class", sa.String(16), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.LargeBinary(16), nullable=False),
        sa.Column("copy", sa.LargeBinary(), nullable=True),
        sa.UniqueConstraint("exercise", "sender", "message_id", name="uq_control_traffic_letter"),
    )
    op.create_index("ix_control_traffic_exercise", "control_traffic", ["exercise"])
    op.create_table(
        "control_counts",
        sa.Column("exercise", sa.String(64), sa.ForeignKey("exercises.name"), primary_key=True),
        sa.Column("channel_class", sa.String(16), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("control_counts")
    op.drop_index("ix_control_traffic_exercise", "control_traffic")
    op.drop_table("control_traffic")
