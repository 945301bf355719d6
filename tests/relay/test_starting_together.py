"""Relay processes starting together on one fresh PostgreSQL database: both migrate, both make
the relay's secrets (relay id, notary key, control keys, admin token), and they end with one
schema, one set of secrets and all of them serving; a process started while a migration holds
the migration lock waits for it and then serves with the same secrets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from backchannel_relay.database import MIGRATION_LOCK

from .conftest import RELAY, Backend, Relay


def spawn(backend: Backend) -> Relay:
    """Start a relay process without waiting for it to serve."""
    relay = Relay(backend.store_args, backend.workdir)
    relay.process = subprocess.Popen(
        [*RELAY, "serve", "--port", str(relay.port), *relay.store_args],
        stdout=relay.log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    return relay


def serving(relay: Relay) -> bool:
    assert relay.process is not None and relay.process.poll() is None, relay.log()[-2000:]
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=0.2):
            return True
    except OSError:
        return False


async def wait_serving(relays: list[Relay], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(serving(relay) for relay in relays):
        assert time.monotonic() < deadline, "a relay did not start in time"
        await asyncio.sleep(0.05)


def database_url(backend: Backend) -> str:
    return backend.store_args[1].replace("postgresql+asyncpg://", "postgresql://")


async def fetch(backend: Backend, sql: str) -> list[Any]:
    import asyncpg

    connection = await asyncpg.connect(database_url(backend))
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def info(relay: Relay) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(relay.url + "/v1/info") as answer:
        assert answer.status == 200
        found: dict[str, Any] = await answer.json()
    return {key: found[key] for key in ("relay_id", "notary_key", "control_key")}


async def invite_with(relay: Relay, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"name": f"admin-{uuid.uuid4().hex[:8]}", "role": "party"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(relay.url + "/v1/admin/invites", json=body, headers=headers) as answer,
    ):
        return answer.status


def printed_tokens(relays: list[Relay]) -> list[str]:
    return [
        line.rsplit(" ", 1)[-1]
        for relay in relays
        for line in relay.log().splitlines()
        if line.startswith("Admin token")
    ]


async def check_one_relay(backend: Backend, relays: list[Relay]) -> None:
    """One schema at head, one set of secrets, one admin token that works on every process."""
    from alembic.script import ScriptDirectory

    from backchannel_relay.database import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert await fetch(backend, "SELECT version_num FROM alembic_version") == [(head,)]
    infos = [await info(relay) for relay in relays]
    assert all(found == infos[0] for found in infos), infos
    tokens = printed_tokens(relays)
    assert len(tokens) == 1, f"{len(tokens)} admin tokens were printed"
    for relay in relays:
        assert await invite_with(relay, tokens[0]) == 201
    keys = await fetch(backend, "SELECT key, count(*) FROM relay_meta GROUP BY key")
    assert all(count == 1 for _, count in keys)
    assert {"relay_id", "notary_key", "control_key", "admin_token_hash"} <= {k for k, _ in keys}


def stop(relays: list[Relay]) -> None:
    for relay in relays:
        relay.kill()


async def test_two_relays_started_at_once_on_a_fresh_database_end_as_one(
    fresh_postgres: Backend,
) -> None:
    relays = [spawn(fresh_postgres), spawn(fresh_postgres)]
    try:
        await wait_serving(relays)
        await check_one_relay(fresh_postgres, relays)
    finally:
        stop(relays)


@contextlib.asynccontextmanager
async def held_lock(backend: Backend) -> AsyncIterator[None]:
    """The relays' migration lock, held by the test as a migrating process would hold it."""
    import asyncpg

    connection = await asyncpg.connect(database_url(backend))
    try:
        await connection.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        yield
    finally:
        await connection.close()  # the lock goes with the session


async def test_relays_started_during_a_migration_wait_for_it_and_share_its_secrets(
    fresh_postgres: Backend,
) -> None:
    relays: list[Relay] = []
    try:
        async with held_lock(fresh_postgres):
            relays += [spawn(fresh_postgres), spawn(fresh_postgres)]
            await asyncio.sleep(3)
            assert not any(serving(relay) for relay in relays), "nobody migrates past the lock"
        await wait_serving(relays)
        async with held_lock(fresh_postgres):
            relays.append(spawn(fresh_postgres))  # a third, while the schema is locked again
            await asyncio.sleep(2)
            assert not serving(relays[-1])
        await wait_serving(relays)
        await check_one_relay(fresh_postgres, relays)
    finally:
        stop(relays)


async def test_secrets_made_at_the_same_moment_are_made_once(
    fresh_postgres: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past the migration, two stores on one database both find no secret and both make one,
    interleaved on purpose: each insert does nothing if the other's is there, and both keep
    what won; only the winner shows the admin token."""
    from backchannel_relay.app import ensure_admin_token
    from backchannel_relay.database import migrate, open_engine
    from backchannel_relay.store import Limits, Store

    engines = [open_engine(fresh_postgres.store_args[1]) for _ in range(2)]
    try:
        await migrate(engines[0])
        await migrate(engines[1])  # at head already: applies nothing
        stores = [Store(engine, Limits()) for engine in engines]
        for key in ("relay_id", "notary_key", "control_key", "control_box_key"):
            made = await asyncio.gather(*(store.meta_secret(key) for store in stores))
            assert made[0][0] == made[1][0], key
            assert sorted(ours for _, ours in made) == [False, True], key
        hashes = await asyncio.gather(*(ensure_admin_token(store) for store in stores))
        assert hashes[0] == hashes[1]
        out = capsys.readouterr().out
        assert out.count("Admin token (shown once") == 1
        assert out.count("made by another relay process") == 1
        assert await ensure_admin_token(stores[0]) == hashes[0]  # later starts: silent
        assert capsys.readouterr().out == ""
    finally:
        for engine in engines:
            await engine.dispose()
