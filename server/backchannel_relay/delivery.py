"""Getting envelopes to recipients: group commit on the way in, wake-ups on the way out.

`GroupCommitter` turns concurrent send requests into few transactions: while one commit is
syncing, new requests queue, and the next commit takes them all. `Hub` wakes the WebSocket of
each recipient whose mailbox just changed and hands it what was committed; the database stays
the truth, so a missed wake-up loses nothing (reconnects resume from the store).

When several processes share one database, a process cannot hand over its own commits: one made
here may have come after another process's commit to the same mailbox whose wake-up is still on
its way, and pushing ours first would move the socket past theirs. There `MailboxFeed` turns
every wake-up, ours and theirs, into a read of the woken mailboxes, in one statement for all of
them, from each socket's cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from aiohttp import WSCloseCode, web

from .store import NewEnvelope, Receipt, Store, StoredEnvelope

log = logging.getLogger("backchannel_relay.delivery")

MAX_REQUESTS_PER_COMMIT = 256


class Subscription(asyncio.Event):
    """One live connection's wake-up, with what was committed for it since it last looked.

    `pending` holds envelopes the Hub handed over (committed in this process, or read by the
    `MailboxFeed`), in seq order, so the connection can push them without reading them itself;
    `stale` says the connection must read the database instead (first pass, a wake-up without
    data, or more arrived than `MAX_PENDING`). The database stays the truth: anything not in
    `pending` is found there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[StoredEnvelope] = []
        self.stale = True
        self.cursor = 0
        """Every envelope up to this seq has been pushed or is in `pending`."""

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
        self.feed: MailboxFeed | None = None
        """Set while other processes share the database: every wake-up then goes through it."""

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
        """These recipients' mailboxes changed: their connections read them from the database."""
        if self.feed is not None:
            self.feed.wake(participant_ids)
            return
        self.mark_stale(participant_ids)

    def notify_all(self) -> None:
        """Wake every live connection to re-read its mailbox (after wake-ups may have been lost)."""
        self.mark_stale(list(self._waiters))

    def mark_stale(self, participant_ids: Iterable[int]) -> None:
        for participant_id in participant_ids:
            for subscription in self._waiters.get(participant_id, ()):
                subscription.stale = True
                subscription.pending = []
                subscription.set()

    def committed(self, participant_id: int, envelopes: Sequence[StoredEnvelope]) -> None:
        """This process just committed these envelopes (in seq order) for this recipient."""
        if self.feed is not None:
            self.feed.wake((participant_id,))
        else:
            self.deliver(participant_id, envelopes)

    def deliver(self, participant_id: int, envelopes: Sequence[StoredEnvelope]) -> None:
        """Hand envelopes (in seq order, none missing after a connection's cursor) to this
        recipient's connections, each from its own cursor on."""
        for subscription in self._waiters.get(participant_id, ()):
            if subscription.stale:
                subscription.set()
                continue
            fresh = [e for e in envelopes if e.seq > subscription.cursor]
            if not fresh:
                continue
            if len(subscription.pending) + len(fresh) > MAX_PENDING:
                subscription.stale = True
                subscription.pending = []
            else:
                subscription.pending.extend(fresh)
                subscription.cursor = fresh[-1].seq
            subscription.set()

    def cursors(self, participant_ids: Iterable[int]) -> dict[int, int]:
        """Recipient -> the lowest cursor of its connections that are not about to read the
        database anyway (recipients with none are left out)."""
        out = {}
        for participant_id in participant_ids:
            live = [s.cursor for s in self._waiters.get(participant_id, ()) if not s.stale]
            if live:
                out[participant_id] = min(live)
        return out

    def connections_of(self, participant_id: int) -> int:
        return len(self._waiters.get(participant_id, ()))

    def connections(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())


class Sockets:
    """This process's open WebSockets, so that stopping the relay can close them all at once."""

    def __init__(self) -> None:
        self._open: set[web.WebSocketResponse] = set()

    def add(self, ws: web.WebSocketResponse) -> None:
        self._open.add(ws)

    def discard(self, ws: web.WebSocketResponse) -> None:
        self._open.discard(ws)

    def __len__(self) -> int:
        return len(self._open)

    async def close_all(self, grace: float) -> None:
        """Close every socket with 1001 (going away): the client knows the relay is stopping,
        not failing. A peer that has not answered its close within `grace` seconds is cut off."""
        closing = [
            asyncio.create_task(ws.close(code=WSCloseCode.GOING_AWAY, message=b"relay stopping"))
            for ws in list(self._open)
        ]
        if not closing:
            return
        _, late = await asyncio.wait(closing, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)


FEED_PAGE = 100
"""Envelopes read per mailbox per round of `MailboxFeed` (a full page asks for another)."""


class MailboxFeed:
    """Reads woken mailboxes for this process's connections, all in one statement per round.

    While one round reads, new wake-ups gather for the next, so a busy relay makes few large
    reads instead of one per connection per wake-up. A round reads each mailbox from the lowest
    cursor of its connections: everything after it that has been committed (a mailbox's commits
    become visible in seq order, see `Store.commit_group`), so what it hands over has no gaps.
    """

    def __init__(self, store: Store, hub: Hub) -> None:
        self.store = store
        self.hub = hub
        self._due: set[int] = set()
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self, participant_ids: Iterable[int]) -> None:
        self._due.update(participant_ids)
        self._woken.set()

    def start(self) -> None:
        self.hub.feed = self
        self._task = asyncio.create_task(self._run(), name="mailbox-feed")

    async def stop(self) -> None:
        self.hub.feed = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._woken.wait()
            self._woken.clear()
            due, self._due = self._due, set()
            cursors = self.hub.cursors(due)
            if not cursors:
                continue
            try:
                pages = await self.store.mailbox_pages(cursors, FEED_PAGE)
            except Exception as exc:  # the sockets read for themselves instead
                log.error("mailbox feed read failed: %s", type(exc).__name__)
                self.hub.mark_stale(cursors)
                await asyncio.sleep(0.1)
                continue
            for participant_id, page in pages.items():
                if page:
                    self.hub.deliver(participant_id, page)
                if len(page) == FEED_PAGE:  # more is waiting: read on from the new cursor
                    self.wake((participant_id,))


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
            self.hub.committed(rid, envelopes)


def _fail(item: _Send | _Ack, exc: Exception) -> None:
    if not item.future.done():
        item.future.set_exception(exc)
