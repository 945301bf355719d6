"""Live delivery across relay processes that share one PostgreSQL database.

Each process's `Hub` only knows the WebSockets it holds. When several processes serve one
exercise, a send accepted by one must also wake a recipient connected to another: the commit
that stores envelopes also runs `pg_notify('backchannel_mailbox', '<origin>:<id>,<id>,...')`
(delivered by PostgreSQL only if, and when, the transaction commits), and every process LISTENs
on a connection of its own and wakes the named recipients, which then read their mailboxes from
the database. The payload holds internal participant ids only: never a name, key or content.

A wake-up carries no data, so a lost one loses nothing: after the listening connection drops,
the process reconnects and wakes every live connection once to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy.engine import make_url

log = logging.getLogger("backchannel_relay.wakeups")

CHANNEL = "backchannel_mailbox"
MAX_PAYLOAD = 7_000
"""Bytes per notification (PostgreSQL's limit is 8,000)."""
RECONNECT_SECONDS = 2.0


def origin_token() -> str:
    """This process's name in notifications, so it skips its own (its Hub already knows)."""
    return os.urandom(6).hex()


def payloads(origin: str, recipient_ids: Iterable[int]) -> list[str]:
    """`origin:id,id,...` strings, each under MAX_PAYLOAD bytes, covering every id once."""
    out: list[str] = []
    current: list[str] = []
    size = len(origin) + 1
    for rid in sorted(set(recipient_ids)):
        text = str(rid)
        if current and size + len(text) + 1 > MAX_PAYLOAD:
            out.append(f"{origin}:{','.join(current)}")
            current, size = [], len(origin) + 1
        current.append(text)
        size += len(text) + 1
    if current:
        out.append(f"{origin}:{','.join(current)}")
    return out


def parse(payload: str, origin: str) -> list[int]:
    """The recipient ids of another process's notification ([] for our own or a malformed one)."""
    sender, _, ids = payload.partition(":")
    if sender == origin:
        return []
    try:
        return [int(part) for part in ids.split(",") if part]
    except ValueError:
        return []


class Wakeable(Protocol):
    """What a `Listener` wakes: the `Hub`, named by shape so the store's commit, which imports
    this module for `payloads`, does not reach up into delivery."""

    def notify(self, participant_ids: Iterable[int]) -> None: ...

    def notify_all(self) -> None: ...


class Listener:
    """Keeps a LISTEN connection open and turns notifications into Hub wake-ups."""

    def __init__(self, database_url: str, hub: Wakeable, origin: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self.dsn = url.render_as_string(hide_password=False)
        self.hub = hub
        self.origin = origin
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self.hub.notify(parse(payload, self.origin))

    async def _run(self) -> None:
        import asyncpg

        first = True
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self.dsn, timeout=10)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._on_notify)
                if not first:  # what was committed while we were deaf: every socket re-reads
                    self.hub.notify_all()
                first = False
                self.connected.set()
                await lost.wait()
                log.warning("lost the PostgreSQL wake-up connection; reconnecting")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot listen for wake-ups: %s", type(exc).__name__)
            finally:
                self.connected.clear()
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close()
            await asyncio.sleep(RECONNECT_SECONDS)
