"""Opening the database and bringing its schema up to date.

SQLite and PostgreSQL run the same SQLAlchemy code; what differs between them lives here: SQLite's
pragmas (durability, secure deletion) and the fact that SQLite admits one writer at a time, which
the store honours with a single write lock instead of letting transactions collide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",  # no receipt leaves before the fsync that covers it
    "PRAGMA foreign_keys=ON",
    "PRAGMA secure_delete=ON",  # deleted envelopes are overwritten, not left in free pages
    "PRAGMA busy_timeout=10000",
    # Checkpoint every ~40 MB of WAL, not every 4 MB: pages written again and again between two
    # checkpoints are copied into the database once. Each commit is still synced to the WAL.
    "PRAGMA wal_autocheckpoint=10000",
)
WRITER_PRAGMAS = (
    # The writer's B-trees (the message-id index above all: random keys) stay in memory.
    "PRAGMA cache_size=-65536",
)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'relay.sqlite3'}"


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def open_engine(url: str) -> AsyncEngine:
    """An async engine with the relay's per-dialect settings."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=8, max_overflow=8)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # Enough connections kept open for a busy process (opening one costs more than most
    # statements); two processes at their most stay well under PostgreSQL's default 100.
    return create_async_engine(url, pool_size=24, max_overflow=8, pool_pre_ping=True)


def open_sync_sqlite_engine(url: URL) -> Engine | None:
    """A synchronous engine on the same SQLite file, with the same pragmas, for the writer
    thread; None for an in-memory database (another connection would see another database)."""
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(url):
        return None
    engine = create_engine(url.set(drivername="sqlite"), pool_size=1, max_overflow=0)

    @event.listens_for(engine, "connect")
    def _writer_pragmas(dbapi_connection: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_connection, record)
        cursor = dbapi_connection.cursor()
        for pragma in WRITER_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()
        dbapi_connection.isolation_level = None  # the driver's own BEGIN off: ours below

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # The write lock from the first statement on: what the transaction reads (the last
        # seq above all) stays true until it commits, whoever else opens the file.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Apply every Alembic migration not yet applied (idempotent; run on every start)."""

    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)
