"""Opening the database and bringing its schema up to date.

SQLite and PostgreSQL run the same SQLAlchemy code; what differs between them lives here: SQLite's
pragmas (durability, secure deletion) and the fact that SQLite admits one writer at a time, which
the store honours with a single write lock instead of letting transactions collide.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
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
    # Neither setting lets a receipt leave before its sync. In WAL mode with synchronous=FULL
    # every commit appends its frames to the WAL and syncs the WAL before it returns; the
    # checkpoint only copies frames that are already durable into the database file (and syncs
    # that before the WAL is reused), so how often it runs changes nothing a commit promised.
    # `synchronous` is not configurable: FULL is the rule (tests/relay/test_sync_before_receipt).
)
WRITER_PRAGMAS = (
    # The writer's B-trees (the message-id index above all: random keys) stay in memory.
    "PRAGMA cache_size=-65536",
)


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal", ".lock")
"""The files SQLite (and `serving_lock`) keep beside the database, by suffix."""


def private_data_dir(data_dir: Path) -> None:
    """Create the data directory 0700, or make an existing one 0700: it holds every message in
    transit, the notary's key and the drops. A directory that is not ours to change is refused
    (an OSError naming it), not served as it is."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    _make_private(data_dir, PRIVATE_DIR)


def _make_private(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) == mode:
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot make it private (mode {mode:o}): {exc.strerror}", str(path)
        ) from None


def private_sqlite_files(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (it would follow the umask, often 0644;
    its WAL and shared-memory files then take the database's mode), and make the files an
    earlier version left readable to others 0600."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            _make_private(companion, PRIVATE_FILE)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'relay.sqlite3'}"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (None for another database or an in-memory one)."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if "mode=memory" in url:
        return None
    return Path(database)


def public_store_url(url: str) -> str:
    """What output may show of a store's URL: a SQLite file's path; another database's URL
    without the async driver and without the password (`postgresql://user@host:5432/db`)."""
    path = sqlite_file(url)
    if path is not None:
        return str(path)
    parsed = make_url(url)
    shown = URL.create(
        parsed.get_backend_name(), parsed.username, None, parsed.host, parsed.port,
        parsed.database, parsed.query,
    )  # fmt: skip
    return shown.render_as_string(hide_password=False)


def store_error(exc: BaseException) -> str:
    """Why a store could not be opened, in one line and without SQLAlchemy's decoration."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        reason = str(exc.orig)
    elif isinstance(exc, SQLAlchemyError):
        reason = str(exc.args[0]) if exc.args else type(exc).__name__
    elif isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if exc.filename is not None and exc.strerror:
            reason = f"{exc.filename}: {exc.strerror}"
    else:
        reason = str(exc) or type(exc).__name__
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class StoreInUse(Exception):
    """Another relay process already serves this SQLite file."""

    def __init__(self, path: Path, holder: str) -> None:
        by = f" (pid {holder})" if holder.isdigit() else ""
        super().__init__(
            f"another relay process{by} already serves the SQLite file {path}; stop it first, "
            "or give this one another --data-dir (several processes need PostgreSQL)"
        )


@contextlib.contextmanager
def serving_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock on `relay.sqlite3.lock` next to a SQLite file while serving it:
    one SQLite file is for one relay process (its writer, its wake-ups and its rate limits are
    the process's own). The lock goes with the process, however it ends. Control commands
    (`invite`, `exercise ...`) take no lock: they may run while the relay serves the file.
    Nothing is locked for PostgreSQL, which several processes may serve."""
    path = sqlite_file(url)
    if path is None:
        yield
        return
    import fcntl

    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise StoreInUse(path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


UNSAFE_COMMIT_FLAG = "--allow-unsafe-commit"


def commit_durability(
    settings: dict[str, str], allow_unsafe: bool
) -> tuple[str | None, str | None]:
    """-> (why the relay refuses to start, what it warns of) for a PostgreSQL server's `fsync`
    and `synchronous_commit`. A receipt means the envelope survives a power loss: the server
    must sync its log before it answers COMMIT. `off` for either answers first, and is refused
    unless the operator says otherwise; `local` and `remote_write` still sync the server's own
    disk but not a synchronous standby's, which matters only after a failover."""
    unsafe = [f"{name}={settings[name]}" for name in ("fsync", "synchronous_commit")
              if settings.get(name) == "off"]  # fmt: skip
    if unsafe:
        why = (
            f"PostgreSQL has {' and '.join(unsafe)}: a receipt could leave before the envelope "
            "is on disk, and a power loss would lose receipted envelopes"
        )
        if allow_unsafe:
            return None, f"{why} ({UNSAFE_COMMIT_FLAG} given)"
        return f"{why}; set it to on, or start with {UNSAFE_COMMIT_FLAG}", None
    level = settings.get("synchronous_commit")
    if level in ("local", "remote_write"):
        return None, (
            f"PostgreSQL has synchronous_commit={level}: receipts follow the sync of this "
            "server's disk, not of a synchronous standby's (a failover may lose receipted "
            "envelopes)"
        )
    return None, None


async def commit_settings(engine: AsyncEngine) -> dict[str, str]:
    """The server's `fsync` and `synchronous_commit` (PostgreSQL only)."""
    async with engine.connect() as connection:
        return {
            name: str((await connection.exec_driver_sql(f"SHOW {name}")).scalar_one())
            for name in ("fsync", "synchronous_commit")
        }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def open_engine(url: str) -> AsyncEngine:
    """An async engine with the relay's per-dialect settings."""
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is not None:
            private_sqlite_files(path)
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


MIGRATION_LOCK = 0x62636D6967726174
"""The PostgreSQL advisory lock (`pg_advisory_xact_lock`) every relay process takes around its
migration, so that processes starting together on one database migrate one after another: the
first applies what is missing, the others then find the schema at head and apply nothing."""


async def migrate(engine: AsyncEngine) -> None:
    """Apply every Alembic migration not yet applied (idempotent; run on every start). On
    PostgreSQL under `MIGRATION_LOCK`, held until the migration's transaction ends (a SQLite
    file is served by one relay process, and SQLite admits one writer at a time anyway)."""

    def upgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)
