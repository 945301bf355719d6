"""A crash loop against real relay processes, scored by `queue_checker`: senders push envelopes
while the relay is killed (SIGKILL) and restarted again and again; a sender whose request failed
sends the same bytes again (same message ids) until it has a receipt, and every fifth batch is
sent twice on purpose; half the recipients read over WebSockets (acknowledging on the socket,
then confirming over HTTP), half poll; at the end every mailbox is drained.

On SQLite one process; on PostgreSQL two processes share the database, each kill hits one of
them, and the clients of the dead one carry on through the other. `tests/relay/test_crash_loop.py`
runs a bounded loop in the suite; for a long one:

    .venv/bin/python -m tests.relay.crash_loop --envelopes 10000 --kills 12
    .venv/bin/python -m tests.relay.crash_loop --envelopes 10000 --kills 12 \\
        --database postgresql+asyncpg://postgres@127.0.0.1:5432/crashloop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from backchannel.envelope import Envelope
from backchannel_cli.relay import RelayClient, RelayRequestError, RelayUnreachable, ack_on_socket

from .conftest import GENEROUS, Backend, Relay, fresh_keys
from .queue_checker import History, Landed, Read, Score, score
from .test_api import envelope

T = TypeVar("T")
FAILED = (RelayUnreachable, aiohttp.ClientError, ConnectionError, TimeoutError)
"""What a client sees of a relay killed under it (or not back yet)."""
RELAY_ARGS = (*GENEROUS, "--read-burst", "100000", "--read-per-second", "100000")


@dataclass(frozen=True)
class Plan:
    envelopes: int = 2000
    kills: int = 5
    senders: int = 4
    recipients: int = 4
    """Half of them on WebSockets, half polling."""
    batch: int = 10
    resend_every: int = 5
    """Every this many batches one is sent a second time after its receipt."""
    size: int = 200
    timeout: float = 600.0


@dataclass
class Outcome:
    score: Score
    kills: list[str]
    seconds: float
    processes: int
    failures: int
    """Requests and WebSockets that failed under a kill (each tried again)."""

    def report(self) -> str:
        return (
            f"{self.processes} relay process(es), {len(self.kills)} kills "
            f"({', '.join(self.kills)}), {self.failures} failed requests retried, "
            f"{self.seconds:.1f} s: {self.score.summary()}"
        )


class Peer:
    """One participant, logged in once, reaching the relay through any of its processes: a
    request that fails is tried again on the next process (on the same one when it is alone)."""

    def __init__(self, name: str, urls: list[str], token: str, turn: int) -> None:
        self.name = name
        self.clients = [RelayClient(url) for url in urls]
        for client in self.clients:
            client.token = token
        self.turn = turn % len(urls)
        self.failures = 0

    @property
    def client(self) -> RelayClient:
        return self.clients[self.turn]

    async def failed(self) -> None:
        self.failures += 1
        self.turn = (self.turn + 1) % len(self.clients)
        await asyncio.sleep(0.1)

    async def call(self, request: Callable[[RelayClient], Awaitable[T]]) -> T:
        """Until the relay answers: safe for sends (same bytes, same ids) and acks."""
        while True:
            try:
                return await request(self.client)
            except FAILED:
                pass
            except RelayRequestError as exc:
                if exc.status < 500 and exc.status != 429:
                    raise
            await self.failed()

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@dataclass
class Loop:
    plan: Plan
    relays: list[Relay]
    history: History = field(default_factory=History)
    clock: itertools.count[int] = field(default_factory=itertools.count)
    receipted: int = 0
    gate: float = 0.0
    """Senders start no batch while `receipted` is at or past this (the next kill's mark, until
    that kill is done): each kill lands where it is meant to, however slow restarts are."""
    kills: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate = self.mark(0)

    def mark(self, number: int) -> float:
        if number >= self.plan.kills:
            return float("inf")
        return self.plan.envelopes * (number + 1) // (self.plan.kills + 1)

    def tick(self) -> int:
        return next(self.clock)

    def read(self, issued: int, relay_id: int, body: bytes) -> None:
        self.history.reads.append(Read(Envelope.from_bytes(body).message_id, relay_id, issued))

    async def ack(self, peer: Peer, ids: list[int]) -> None:
        await peer.call(lambda client: client.acknowledge(ids))
        self.history.landed.append(Landed(tuple(ids), self.tick()))

    async def send(self, peer: Peer, batches: list[list[bytes]]) -> None:
        for number, batch in enumerate(batches):
            while self.receipted >= self.gate:
                await asyncio.sleep(0.01)
            self.history.attempted.update(Envelope.from_bytes(e).message_id for e in batch)
            for _ in range(2 if number % self.plan.resend_every == 0 else 1):
                receipts = await peer.call(lambda client, b=batch: client.send(b))  # type: ignore[misc]
                self.history.receipts.extend(
                    (bytes.fromhex(r["message_id"]), int(r["id"])) for r in receipts
                )
            self.receipted += len(batch)

    async def poll(self, peer: Peer, until_empty: bool = False) -> None:
        """Read everything unacknowledged, acknowledge it, again; `until_empty`: stop at the
        first empty read (the final drain), else run until cancelled."""
        while True:
            issued = self.tick()
            try:
                page, _ = await peer.client.mailbox(after=0, limit=500)
            except FAILED:
                await peer.failed()
                continue
            except RelayRequestError as exc:
                if exc.status < 500 and exc.status != 429:
                    raise
                await peer.failed()
                continue
            for item in page:
                self.read(issued, item.id, item.envelope)
            if page:
                await self.ack(peer, [item.id for item in page])
            elif until_empty:
                return
            else:
                await asyncio.sleep(0.05)

    async def listen(self, peer: Peer) -> None:
        """Read pushes, acknowledge each on the socket and confirm them over HTTP in the
        background (the socket's acknowledgement has no answer to time its landing by)."""
        pending: list[int] = []

        async def confirm() -> None:
            while True:
                await asyncio.sleep(0.1)
                if pending:
                    ids = list(pending)
                    await self.ack(peer, ids)
                    del pending[: len(ids)]

        confirming = asyncio.create_task(confirm())
        try:
            while True:
                issued = self.tick()
                with contextlib.suppress(*FAILED, RelayRequestError):
                    async for pushed, socket in peer.client.live():
                        self.read(issued, pushed.id, pushed.envelope)
                        pending.append(pushed.id)
                        await ack_on_socket(socket, [pushed.id])
                await peer.failed()
        finally:
            confirming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await confirming
            if pending:
                await self.ack(peer, pending)

    async def kill_along(self) -> None:
        """SIGKILL a relay (taking turns on several) each time the receipts pass the next of
        `kills` evenly spaced marks, and start it again on the same port in the background (on
        PostgreSQL the clients carry on through the other process meanwhile)."""
        restarts: dict[int, asyncio.Task[None]] = {}
        for number in range(self.plan.kills):
            while self.receipted < self.mark(number):
                await asyncio.sleep(0.01)
            which = number % len(self.relays)
            if which in restarts:
                await restarts.pop(which)
            self.relays[which].kill()
            self.kills.append(f"#{which + 1} at {self.receipted}")
            self.gate = self.mark(number + 1)
            restarts[which] = asyncio.create_task(asyncio.to_thread(self.relays[which].start))
        for restart in restarts.values():
            await restart


async def admin_invite(relay: Relay, token: str, name: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            relay.url + "/v1/admin/invites", json={"name": name, "role": "party"}, headers=headers
        ) as answer,
    ):
        body: dict[str, Any] = await answer.json()
        assert answer.status == 201, body
        return str(body["invite"])


def admin_token(relays: list[Relay]) -> str | None:
    """The admin token one of the relays printed; None on a database used before."""
    for relay in relays:
        with contextlib.suppress(AssertionError):
            return relay.admin_token()
    return None


async def enrol(relays: list[Relay], token: str | None, prefix: str, turn: int) -> Peer:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    identity, secrets = fresh_keys(one_time=1, kem=1)
    published = secrets.published(identity)
    if token is None:  # no token shown: the control command on the store instead (slower)
        invite = await asyncio.to_thread(relays[0].invite, name)
    else:
        invite = await admin_invite(relays[0], token, name)
    async with RelayClient(relays[0].url) as client:
        await client.register(
            identity,
            name,
            invite,
            published.signed,
            published.kem_last_resort,
            published.one_time,
            published.kem_one_time,
        )
        session = await client.login(identity, name)
    return Peer(name, [relay.url for relay in relays], session, turn)


async def crash_loop(backend: Backend, plan: Plan, processes: int = 1) -> Outcome:
    """Start `processes` relays on `backend`, run the loop, drain, score."""
    relays = [
        Relay(backend.store_args, backend.workdir, list(RELAY_ARGS)) for _ in range(processes)
    ]
    for relay in relays:
        relay.start()
    peers: list[Peer] = []
    try:
        started = time.monotonic()
        loop = Loop(plan, relays)
        token = admin_token(relays)
        senders = [await enrol(relays, token, "sender", i) for i in range(plan.senders)]
        recipients = [
            await enrol(relays, token, "recipient", i + 1) for i in range(plan.recipients)
        ]
        peers = senders + recipients
        batches: list[list[list[bytes]]] = [[] for _ in senders]
        for n in range(0, plan.envelopes, plan.batch):
            sender = senders[(n // plan.batch) % len(senders)]
            to = recipients[(n // plan.batch) % len(recipients)]
            count = min(plan.batch, plan.envelopes - n)
            batches[senders.index(sender)].append(
                [envelope(sender.name, to.name, size=plan.size) for _ in range(count)]
            )
        readers = [
            asyncio.create_task(loop.listen(r) if i % 2 == 0 else loop.poll(r))
            for i, r in enumerate(recipients)
        ]
        killing = asyncio.create_task(loop.kill_along())
        await asyncio.wait_for(
            asyncio.gather(*(loop.send(s, b) for s, b in zip(senders, batches, strict=True))),
            plan.timeout,
        )
        await asyncio.wait_for(killing, plan.timeout)
        await asyncio.sleep(0.5)  # the readers catch up on what is left
        for reader in readers:
            reader.cancel()
        for reader in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for recipient in recipients:
            await loop.poll(recipient, until_empty=True)
        # The first batches again, every one of them acknowledged by now: kept once, not again.
        await asyncio.gather(*(loop.send(s, b[:1]) for s, b in zip(senders, batches, strict=True)))
        for recipient in recipients:
            await loop.poll(recipient, until_empty=True)
        failures = sum(peer.failures for peer in peers)
        return Outcome(
            score(loop.history), loop.kills, time.monotonic() - started, processes, failures
        )
    finally:
        for peer in peers:
            await peer.close()
        for relay in relays:
            relay.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.relay.crash_loop",
        description="Kill the relay again and again under load; score it like Jepsen's queue "
        "checker. SQLite in a temporary directory unless --database names a PostgreSQL one.",
    )
    parser.add_argument("--envelopes", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--database", help="a PostgreSQL URL (postgresql+asyncpg://...)")
    parser.add_argument("--processes", type=int, default=2, help="on PostgreSQL (default 2)")
    args = parser.parse_args(argv)
    plan = Plan(envelopes=args.envelopes, kills=args.kills, timeout=3600)
    with tempfile.TemporaryDirectory(prefix="crash-loop-") as workdir:
        if args.database:
            backend = Backend("postgresql", ["--database", args.database], Path(workdir))
            processes = args.processes
        else:
            backend = Backend(
                "sqlite", ["--data-dir", os.path.join(workdir, "data")], Path(workdir)
            )
            processes = 1
        outcome = asyncio.run(crash_loop(backend, plan, processes))
    print(f"{backend.name}: {outcome.report()}")
    for kind, shown in outcome.score.examples.items():
        print(f"  {kind}: {', '.join(shown)}")
    return 0 if outcome.score.ok else 1


if __name__ == "__main__":
    sys.exit(main())
