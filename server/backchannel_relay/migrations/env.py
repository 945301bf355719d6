"""Alembic environment: always handed a live connection by `database.migrate`."""

from __future__ import annotations

from alembic import context

from backchannel_relay.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `backchannel-relay migrate`")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
