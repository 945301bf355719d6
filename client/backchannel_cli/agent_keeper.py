"""The agent's keeper: a fork of the agent that works while nobody types (`Participant.keep`)
and streams events to `agent events` subscribers.

Events are read from the store, not from the work as it happens, so a command run by another
fork (a `send`) shows up too: after each arrival, round and finished command, the newest
messages are compared with what was last seen. One event per line, as a JSON-RPC notification
`event` whose params are one of: `{"event": "message", "message": {...}}` (as `history --json`
prints a message; again when its text changes, as a timed proposal's once open),
`{"event": "status", "id", "status"}`, `{"event": "connection", "online"}`,
`{"event": "note", "text"}`, `{"event": "locked"}` (the last one: the keeper ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from typing import Any

from sqlalchemy import select

from . import agent_protocol as protocol
from .localstore import Message
from .profile import Unlocked
from .service import WATCHING, Participant

KEEP_POLL = 5.0
"""Seconds between the keeper's rounds (timed proposals, releases, injects, prekeys, outbox)."""
RECENT = 2000
"""How many of the newest messages the event feed compares (its memory is bounded by it)."""
DEBOUNCE = 0.2
SUBSCRIBER_BUFFER = 1024 * 1024
"""A subscriber that falls this far behind is dropped (it can subscribe again)."""
MAX_SUBSCRIBERS = 16


def run_keeper(unlocked: Unlocked, channel: socket.socket) -> None:
    asyncio.run(Keeper(unlocked, channel).run())


class Keeper:
    def __init__(self, unlocked: Unlocked, channel: socket.socket) -> None:
        self.participant = Participant(unlocked)
        self.channel = channel
        self.subscribers: list[asyncio.StreamWriter] = []
        self.seen: dict[str, tuple[str, int]] = self._statuses()
        """Message id -> (status, a hash of its sealed text) as last compared."""
        self.pending: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._from_agent)
        try:
            await self.participant.keep(self._notice, self.changed, KEEP_POLL)
        except asyncio.CancelledError:
            pass
        finally:
            self._publish({"event": "locked"})
            for writer in self.subscribers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.drain(), 1.0)
                    writer.close()
            with contextlib.suppress(Exception):
                await self.participant.close()

    # --- from the agent -----------------------------------------------------------------------

    def _from_agent(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.channel, 4096, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data and not fds:  # the agent is gone: so are we
            task = next(iter(asyncio.all_tasks()), None)
            if task is not None:
                task.cancel()
            return
        for fd in fds:
            asyncio.get_running_loop().create_task(self._subscribe(fd))
        if b"changed" in data:
            self.changed()

    async def _subscribe(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            sock.close()
            return
        sock.setblocking(False)
        _, writer = await asyncio.open_connection(sock=sock)
        self.subscribers.append(writer)

    # --- events -------------------------------------------------------------------------------

    def _notice(self, line: str) -> None:
        if line in (WATCHING, "Reconnected."):
            self._online(True)
        elif "reconnecting in the background" in line:
            self._online(False)
        else:
            self._publish({"event": "note", "text": line.removeprefix("Note: ")})

    def _online(self, online: bool) -> None:
        with contextlib.suppress(OSError):
            self.channel.send(b"online\n" if online else b"offline\n")
        self._publish({"event": "connection", "online": online})

    def changed(self) -> None:
        """Something may have changed in the store: compare soon (many arrivals, one look)."""
        if self.pending is None:
            self.pending = asyncio.get_running_loop().call_later(DEBOUNCE, self._compare)

    def _compare(self) -> None:
        self.pending = None
        if not self.subscribers:
            self.seen = self._statuses()
            return
        with self.participant.store.transaction() as db:
            rows = self._recent(db)
            for message in reversed(rows):
                before = self.seen.get(message.id)
                if before is None or before[1] != hash(message.text):  # new, or rewritten
                    shown = self.participant._shown(message)  # (a timed proposal, now open)
                    self._publish({"event": "message", "message": shown.as_json()})
                elif before[0] != message.status:
                    self._publish({"event": "status", "id": message.id, "status": message.status})
            self.seen = {m.id: (m.status, hash(m.text)) for m in rows}

    def _statuses(self) -> dict[str, tuple[str, int]]:
        with self.participant.store.transaction() as db:
            return {m.id: (m.status, hash(m.text)) for m in self._recent(db)}

    def _recent(self, db: Any) -> list[Message]:
        query = select(Message).order_by(Message.stored_at.desc(), Message.id).limit(RECENT)
        return list(db.scalars(query))

    def _publish(self, event: dict[str, Any]) -> None:
        line = protocol.notification("event", event)
        for writer in list(self.subscribers):
            transport = writer.transport
            if transport.is_closing() or transport.get_write_buffer_size() > SUBSCRIBER_BUFFER:
                self.subscribers.remove(writer)
                writer.close()
                continue
            writer.write(line)
