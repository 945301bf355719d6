"""A real relay in a subprocess on a real socket, on SQLite and on the local PostgreSQL.

Every relay test runs once per backend. PostgreSQL tests use a throwaway database per run; on a
machine without PostgreSQL they are skipped with the reason shown, except under CI (CI=true),
where a missing PostgreSQL fails the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backchannel.identity import IdentityKeyPair
from backchannel.prekeys import PrekeySecrets
from backchannel_cli.relay import RelayClient

RELAY = [sys.executable, "-m", "backchannel_relay"]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed"

    async def probe() -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}"
    return None


def _pg(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


@dataclass
class Relay:
    """A relay subprocess and what is needed to talk to it and to its store."""

    store_args: list[str]
    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"relay-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    startup_seconds = 30.0
    """How long `start` waits for the relay to listen."""

    def command(self) -> list[str]:
        """The relay's command line (a subclass may put a tracer in front of it)."""
        return [*RELAY, "serve", "--port", str(self.port), *self.store_args, *self.extra_args]

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"relay exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"relay did not start within {self.startup_seconds:g} s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def invite(self, name: str, role: str = "party") -> str:
        out = subprocess.run(
            [*RELAY, "invite", name, "--role", role, *self.store_args, "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return str(json.loads(out)["invite"])

    def admin_token(self) -> str:
        for line in self.log().splitlines():
            if line.startswith("Admin token"):
                return line.rsplit(" ", 1)[-1]
        raise AssertionError("no admin token in the relay's output")


@dataclass
class Backend:
    name: str
    store_args: list[str]
    workdir: Path


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    workdir = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        yield Backend("sqlite", ["--data-dir", str(workdir / "data")], workdir)
        return
    yield from _postgres(workdir)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """For what only PostgreSQL does (several relay processes on one store): a database of its
    own, whichever backend the other tests run on."""
    yield from _postgres(tmp_path_factory.mktemp("postgres-only"))


@pytest.fixture
def fresh_postgres(tmp_path: Path) -> Iterator[Backend]:
    """A PostgreSQL database of the test's own that no relay has opened yet (the session's one
    has its schema and secrets made by whichever test came first)."""
    yield from _postgres(tmp_path)


def require_postgres() -> None:
    """The local PostgreSQL answers: else the test fails in CI and is skipped elsewhere."""
    reason = _pg_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
        pytest.skip(reason)


def _postgres(workdir: Path) -> Iterator[Backend]:
    require_postgres()
    database = f"bc_test_{uuid.uuid4().hex[:12]}"
    _pg(f'CREATE DATABASE "{database}"')
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        yield Backend("postgresql", ["--database", url], workdir)
    finally:
        _pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


GENEROUS = (
    *("--rate-burst", "100000", "--rate-per-second", "100000"),
    *("--send-burst", "100000", "--send-per-second", "100000"),
    *("--public-rate-burst", "100000"),
)
"""Rate limits out of the way, for a test about something else."""


def make_relay(backend: Backend, *extra: str) -> Relay:
    relay = Relay(backend.store_args, backend.workdir, list(extra))
    relay.start()
    return relay


@pytest.fixture(scope="session")
def relay(backend: Backend) -> Iterator[Relay]:
    """A shared relay per backend with rate limits out of the way of the tests. On SQLite it
    has a store of its own: one SQLite file is for one relay process, and tests start others."""
    shared = backend
    if backend.name == "sqlite":
        shared = Backend("sqlite", ["--data-dir", str(backend.workdir / "shared")], backend.workdir)
    running = make_relay(
        shared,
        *("--rate-burst", "100000", "--rate-per-second", "100000"),
        *("--send-burst", "100000", "--send-per-second", "100000"),
        *("--public-rate-burst", "100000", "--sweep-interval", "0.2"),
        *("--prekey-fetch-burst", "100000", "--prekey-fetch-pair-burst", "100000"),
    )
    yield running
    running.kill(signal.SIGTERM)


@dataclass
class Member:
    name: str
    identity: IdentityKeyPair
    prekeys: PrekeySecrets
    client: RelayClient


_counter = iter(range(1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def fresh_keys(one_time: int = 5, kem: int = 2) -> tuple[IdentityKeyPair, PrekeySecrets]:
    identity = IdentityKeyPair.generate()
    secrets, _ = PrekeySecrets().add_signed_prekey(identity)
    secrets, _ = secrets.add_one_time_prekeys(one_time)
    secrets, _ = secrets.add_kem_prekeys(identity, 1, last_resort=True)
    secrets, _ = secrets.add_kem_prekeys(identity, kem)
    return identity, secrets


async def join(relay: Relay, prefix: str = "p", one_time: int = 5, role: str = "party") -> Member:
    """Register a new participant with fresh keys and log it in."""
    name = unique(prefix)
    identity, secrets = fresh_keys(one_time)
    published = secrets.published(identity)
    client = RelayClient(relay.url)
    await client.register(
        identity,
        name,
        relay.invite(name, role),
        published.signed,
        published.kem_last_resort,
        published.one_time,
        published.kem_one_time,
    )
    await client.login(identity, name)
    return Member(name, identity, secrets, client)


@pytest.fixture
async def members(relay: Relay) -> AsyncIterator[list[Member]]:
    """Two registered, logged-in participants, closed after the test."""
    joined = [await join(relay), await join(relay)]
    yield joined
    for member in joined:
        await member.client.close()
