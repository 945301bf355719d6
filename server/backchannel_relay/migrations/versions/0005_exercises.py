"""exercises: scenarios, their roles and clocks

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exercises",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("clock", sa.String(length=200), nullable=False),
        sa.Column("loaded_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "exercise_roles",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("exercise", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["exercise"], ["exercises.name"]),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_exercise_roles_exercise", "exercise_roles", ["exercise"])


def downgrade() -> None:
    op.drop_table("exercise_roles")
    op.drop_table("exercises")
