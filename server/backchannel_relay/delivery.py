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

from .store import NewEnvelope, Receipt, Store, StoredEnvelope

log = logging.getLogger("backchannel_relay.delivery")

MAX_REQUESTS_PER_COMMIT = 256


class Subscription(asyncio.Event):
    """One live connection's wake-up, with what was committed for it since it last looked.

    `pending` holds envelopes committed in this process, in seq order, so the connection can
    push them without reading them back; `stale` says the database must be read instead
    (first pass, a wake-up without data, or more arrived than `MAX_PENDING`). The database
    stays the truth: anything not in `pending` is found there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[StoredEnvelope] = []
        self.stale = True

    def take(self) -> tuple[list[StoredEnvelope], bool]:
        """-> (envelopes to push, whether to read the database for more) and start afresh."""
        pending, stale = self.pending, self.stale
        self.pending, self.stale = [], False
        self.clear()
        return ([], True) if stale else (pending, False)


MAX_PENDING = 1000
"""Envelopes held per connection before it is told to read the database instead."""


class Hub:
    """Recipient id -> the subscriptions of its live connections in this process."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[Subscription]] = {}

    def subscribe(self, participant_id: int) -> Subscription:
        subscription = Subscription()
        self._waiters.setdefault(participant_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, participant_id: int, event: asyncio.Event) -> None:
        waiters = self._waiters.get(participant_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[participant_id]

    def notify(self, participant_ids: Iterable[int]) -> None:
        """Wake these recipients' connections to read their mailboxes from the database."""
        for participant_id in participant_ids:
            for subscription in self._waiters.get(participant_id, ()):
                subscription.stale = True
                subscription.pending = []
                subscription.set()

    def notify_all(self) -> None:
        """Wake every live connection to re-read its mailbox (after wake-ups may have been lost)."""
        self.notify(list(self._waiters))

    def deliver(self, participant_id: int, envelopes: Sequence[StoredEnvelope]) -> None:
        """Hand just-committed envelopes (in seq order) to this recipient's connections."""
        for subscription in self._waiters.get(participant_id, ()):
            if not subscription.stale:
                if len(subscription.pending) + len(envelopes) > MAX_PENDING:
                    subscription.stale = True
                    subscription.pending = []
                else:
                    subscription.pending.extend(envelopes)
            subscription.set()

    def connections_of(self, participant_id: int) -> int:
        return len(self._waiters.get(participant_id, ()))

    def connections(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())


class _Send:
    __slots__ = ("envelopes", "future")

    def __init__(
        self, envelopes: Sequence[tuple[int, NewEnvelope]], future: asyncio.Future[list[Receipt]]
    ) -> None:
        self.envelopes = envelopes
        self.future = future


class _Ack:
    __slots__ = ("future", "recipient_id", "seqs")

    def __init__(self, recipient_id: int, seqs: Sequence[int], future: asyncio.Future[int]) -> None:
        self.recipient_id = recipient_id
        self.seqs = seqs
        self.future = future


class GroupCommitter:
    """Sends and acknowledgements from every connection, a group per transaction.

    While one transaction is being written and synced, what arrives waits in the queue; the next
    transaction takes all of it (up to `MAX_REQUESTS_PER_COMMIT`). Acknowledgements ride along:
    they would otherwise each cost a transaction and a sync of their own, and take turns with
    the sends for SQLite's single write lock.
    """

    def __init__(self, store: Store, hub: Hub) -> None:
        self.store = store
        self.hub = hub
        self._queue: asyncio.Queue[_Send | _Ack] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, envelopes: Sequence[tuple[int, NewEnvelope]]) -> list[Receipt]:
        """Returns only after the transaction holding these envelopes has committed."""
        future: asyncio.Future[list[Receipt]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Send(envelopes, future))
        return await future

    async def acknowledge(self, recipient_id: int, seqs: Sequence[int]) -> int:
        """Delete from `recipient_id`'s mailbox; -> how many were there (after the commit)."""
        if not seqs:
            return 0
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Ack(recipient_id, seqs, future))
        return await future

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            future = self._queue.get_nowait().future
            if not future.done():
                future.set_exception(ConnectionAbortedError("relay is shutting down"))

    async def _run(self) -> None:
        while True:
            pending = [await self._queue.get()]
            while not self._queue.empty() and len(pending) < MAX_REQUESTS_PER_COMMIT:
                pending.append(self._queue.get_nowait())
            live = [p for p in pending if not p.future.cancelled()]
            if not live:
                continue
            try:
                await self._commit(live)
            except Exception as exc:
                log.error("group commit failed: %s", type(exc).__name__)
                # One request may be the cause: each one again in a transaction of its own, so
                # only what fails alone fails (and the others still get their receipts).
                for item in live if len(live) > 1 else ():
                    try:
                        await self._commit([item])
                    except Exception as alone:
                        _fail(item, alone)
                if len(live) == 1:
                    _fail(live[0], exc)

    async def _commit(self, items: Sequence[_Send | _Ack]) -> None:
        """One transaction for these requests; settles their futures once it has committed."""
        sends = [p for p in items if isinstance(p, _Send)]
        acks = [p for p in items if isinstance(p, _Ack)]
        results, counts = await self.store.commit_group(
            [s.envelopes for s in sends], [(a.recipient_id, a.seqs) for a in acks]
        )
        for ack, count in zip(acks, counts, strict=True):
            if not ack.future.done():
                ack.future.set_result(count)
        arrived: dict[int, list[StoredEnvelope]] = {}
        for send, result in zip(sends, results, strict=True):
            if isinstance(result, Exception):
                if not send.future.done():
                    send.future.set_exception(result)
                continue
            for (rid, envelope), receipt in zip(send.envelopes, result, strict=True):
                if not receipt.duplicate:
                    arrived.setdefault(rid, []).append(
                        StoredEnvelope(receipt.seq, receipt.received_at_ms, envelope.body)
                    )
            if not send.future.done():
                send.future.set_result(result)
        for rid, envelopes in arrived.items():
            self.hub.deliver(rid, envelopes)


def _fail(item: _Send | _Ack, exc: Exception) -> None:
    if not item.future.done():
        item.future.set_exception(exc)
