"""Destroying a relay's store for good when an exercise is over (`backchannel-relay wipe`).

Every table is emptied (whatever migrations have added: the tables are read from the database,
not from this code), then the freed space is overwritten or released: SQLite deletes with
`secure_delete` on, checkpoints its write-ahead log with TRUNCATE and rebuilds the file with
VACUUM; PostgreSQL rewrites every table with VACUUM FULL, which drops the old table files.

One exercise cannot be cut out of a shared store: the notary log is one hash chain for every
exercise, and blanking one exercise's entries would break the receipts and exported records of
the others. `--exercise NAME` therefore wipes the store only when NAME is all it holds.

`backup_sqlite` is the other way data leaves the store: a copy without the off-the-record rows.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import MetaData, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .database import is_sqlite
from .errors import RelayError

KINDS = {
    "envelopes": "envelopes",
    "message_ids": "envelopes",
    "mailbox_shares": "envelopes",
    "drops": "drops",
    "drop_messages": "drops",
    "participants": "registrations",
    "invites": "invites",
    "session_tokens": "session_tokens",
    "auth_challenges": "challenges",
    "signed_prekeys": "prekeys",
    "one_time_prekeys": "prekeys",
    "kem_prekeys": "prekeys",
    "notary_log": "notary_entries",
    "notary_addressees": "notary_entries",
    "notary_keys": "notary_keys",
    "relay_meta": "relay_keys",
    "exercises": "exercises",
    "exercise_roles": "exercises",
    "rate_buckets": "rate_buckets",
}
"""What each table holds, as `wipe` reports it; a table added later is reported by its name."""

KEPT = frozenset({"alembic_version"})
"""The schema's version: not data, and the emptied store stays a valid, migrated store."""

RESIDUE_NOTE = (
    "the store's rows are gone and its free space overwritten or released, but the file system "
    "or disk may still hold copies: backups and snapshots, the database server's own logs and "
    "archived WAL, journaling file systems, and an SSD's worn-out blocks (wear levelling); "
    "destroy those separately, or use full-disk encryption and destroy its key"
)


@dataclass
class Wiped:
    """What `wipe` destroyed: rows per kind."""

    destroyed: dict[str, int] = field(default_factory=dict)
    vacuumed: bool = False


def _counts(connection: Connection) -> tuple[MetaData, dict[str, int]]:
    metadata = MetaData()
    metadata.reflect(connection)
    counts = {}
    for table in metadata.sorted_tables:
        if table.name not in KEPT:
            counts[table.name] = int(
                connection.execute(select(func.count()).select_from(table)).scalar_one()
            )
    return metadata, counts


def _only_exercise(connection: Connection, exercise: str) -> None:
    """Refuse `--exercise NAME` unless NAME is everything the store holds (module docstring)."""
    metadata = MetaData()
    metadata.reflect(connection, only=["exercises", "exercise_roles", "participants", "invites"])
    exercises, roles = metadata.tables["exercises"], metadata.tables["exercise_roles"]
    names = list(connection.execute(select(exercises.c.name)).scalars())
    if exercise not in names:
        raise RelayError(
            f"there is no exercise {exercise!r} in this store", code="unknown_exercise"
        )
    others = sorted(set(names) - {exercise})
    members = select(roles.c.name).where(roles.c.exercise == exercise)
    outsiders = sum(
        connection.execute(
            select(func.count()).select_from(table).where(~table.c.name.in_(members))
        ).scalar_one()
        for table in (metadata.tables["participants"], metadata.tables["invites"])
    )
    if others or outsiders:
        held = (
            f"exercises {', '.join(others)}"
            if others
            else f"{outsiders} participant(s) or invite(s)"
        )
        raise RelayError(
            f"the store also holds {held} outside {exercise!r}, and the notary log is one hash "
            "chain for all of them: wipe the whole store once they are over too (without "
            "--exercise), or run each exercise on a store of its own",
            code="store_shared",
        )


async def other_sessions(engine: AsyncEngine) -> int:
    """PostgreSQL: how many other sessions are connected to this database (relays keep a pool
    open); 0 on SQLite, whose running relay the serving lock reveals instead."""
    if is_sqlite(engine):
        return 0
    async with engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
        )
        return int(found.scalar_one())


async def wipe_store(engine: AsyncEngine, exercise: str | None = None) -> Wiped:
    """Empty every table (children first), then overwrite or release the freed space."""
    wiped = Wiped()

    def empty(connection: Connection) -> None:
        if exercise is not None:
            _only_exercise(connection, exercise)
        metadata, counts = _counts(connection)
        for table in reversed(metadata.sorted_tables):
            if table.name not in KEPT:
                connection.execute(table.delete())
        for name, count in counts.items():
            kind = KINDS.get(name, name)
            wiped.destroyed[kind] = wiped.destroyed.get(kind, 0) + count

    async with engine.begin() as connection:
        if is_sqlite(engine):
            await connection.exec_driver_sql("PRAGMA secure_delete=ON")
        await connection.run_sync(empty)
    async with engine.connect() as connection:
        plain = await connection.execution_options(isolation_level="AUTOCOMMIT")
        if is_sqlite(engine):
            await plain.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            await plain.exec_driver_sql("VACUUM")
            await plain.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            await plain.exec_driver_sql("VACUUM FULL")
    wiped.vacuumed = True
    return wiped


OFF_THE_RECORD_TABLES = ("drop_messages", "drops")
"""Never in a backup (PRODUCT.md §7): children first."""


def backup_sqlite(store: Path, out: Path) -> dict[str, int]:
    """An online, consistent copy of a SQLite store without its off-the-record tables' rows:
    SQLite's backup API into `OUT.partial` (0600), the drops deleted there with secure_delete,
    the copy rebuilt by VACUUM, then renamed to `out`. -> rows kept per table."""
    partial = out.with_name(out.name + ".partial")
    os.close(os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        source = sqlite3.connect(store)
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            copy.execute("PRAGMA secure_delete=ON")
            for table in OFF_THE_RECORD_TABLES:
                copy.execute(f'DELETE FROM "{table}"')
            copy.execute("VACUUM")
            tables = [
                row[0]
                for row in copy.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                )
            ]
            kept = {
                t: int(copy.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables
            }
        finally:
            copy.close()
            source.close()
        os.replace(partial, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return kept
