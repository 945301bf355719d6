"""Getting envelopes to recipients: group commit on the way in, wake-ups on the way out.

`GroupCommitter` turns concurrent send requests into few transactions: while one commit is
syncing, new requests queue, and the next commit takes them all. `Hub` wakes the WebSocket of
each recipient whose mailbox just changed; the socket then reads its mailbox from the database,
so a wake-up carries no data and a missed one loses nothing (reconnects resume from the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from .store import NewEnvelope, Receipt, Store

log = logging.getLogger("backchannel_relay.delivery")

MAX_REQUESTS_PER_COMMIT = 256


class Hub:
    """Recipient id -> the events of its live connections in this process."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = {}

    def subscribe(self, participant_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(participant_id, set()).add(event)
        return event

    def unsubscribe(self, participant_id: int, event: asyncio.Event) -> None:
        waiters = self._waiters.get(participant_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[participant_id]

    def notify(self, participant_ids: Iterable[int]) -> None:
        for participant_id in participant_ids:
            for event in self._waiters.get(participant_id, ()):
                event.set()

    def connections_of(self, participant_id: int) -> int:
        return len(self._waiters.get(participant_id, ()))

    def connections(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())


Pending = tuple[Sequence[tuple[int, NewEnvelope]], "asyncio.Future[list[Receipt]]"]


class GroupCommitter:
    def __init__(self, store: Store, hub: Hub) -> None:
        self.store = store
        self.hub = hub
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, envelopes: Sequence[tuple[int, NewEnvelope]]) -> list[Receipt]:
        """Returns only after the transaction holding these envelopes has committed."""
        future: asyncio.Future[list[Receipt]] = asyncio.get_running_loop().create_future()
        await self._queue.put((envelopes, future))
        return await future

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(ConnectionAbortedError("relay is shutting down"))

    async def _run(self) -> None:
        while True:
            pending = [await self._queue.get()]
            while not self._queue.empty() and len(pending) < MAX_REQUESTS_PER_COMMIT:
                pending.append(self._queue.get_nowait())
            pending = [(batch, future) for batch, future in pending if not future.cancelled()]
            if not pending:
                continue
            try:
                results = await self.store.commit_envelopes([batch for batch, _ in pending])
            except Exception as exc:  # the database failed: every waiting request learns it
                log.error("group commit failed: %s", type(exc).__name__)
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            woken: set[int] = set()
            for (batch, future), result in zip(pending, results, strict=True):
                if isinstance(result, Exception):
                    if not future.done():
                        future.set_exception(result)
                    continue
                woken.update(rid for rid, _ in batch)
                if not future.done():
                    future.set_result(result)
            self.hub.notify(woken)
