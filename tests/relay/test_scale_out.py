"""Several relay processes on one PostgreSQL database (a throwaway one): clients spread over
both; every envelope reaches its recipient exactly once, live, across processes; one-time
prekeys fetched through both at once are never handed out twice; a `kill -9` of one relay loses
nothing it acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

from backchannel.envelope import Envelope
from backchannel.prekeys import PrekeyBundle
from backchannel_cli.relay import RelayRequestError, RelayUnreachable, ack_on_socket

from .conftest import Backend, Member, Relay, join, make_relay
from .test_api import envelope
from .test_durability_and_hygiene import mailbox_ids, relogin

FAST = (
    *("--rate-burst", "100000", "--rate-per-second", "100000", "--public-rate-burst", "100000"),
    *("--send-burst", "100000", "--send-per-second", "100000"),
    *("--prekey-fetch-burst", "100000", "--prekey-fetch-pair-burst", "100000"),
)


class Inbox:
    """A recipient's live WebSocket on one relay: acknowledges on the socket, and counts each
    message id it is handed (the application sees each once: it de-duplicates by id)."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.seen: Counter[bytes] = Counter()
        self.opened = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(RelayUnreachable):
            async for pushed, socket in self.member.client.live(on_open=self.opened.set):
                self.seen[Envelope.from_bytes(pushed.envelope).message_id] += 1
                await ack_on_socket(socket, [pushed.id])

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.member.client.close()


@contextlib.contextmanager
def two_relays(backend: Backend, *extra: str) -> Iterator[list[Relay]]:
    """Two relay processes on one database (rate limits out of the way unless `extra` says)."""
    relays = [make_relay(backend, *(extra or FAST)), make_relay(backend, *(extra or FAST))]
    try:
        yield relays
    finally:
        for relay in relays:
            relay.kill()


async def eventually(check: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_clients_on_two_relays_get_everything_exactly_once_live(postgres: Backend) -> None:
    with two_relays(postgres) as relays:
        senders = [await join(relays[i % 2], "sender") for i in range(4)]
        recipients = [await join(relays[0], "recipient") for _ in range(4)]
        # Each recipient listens on the relay its senders do not use half the time.
        inboxes = [Inbox(await relogin(relays[(i + 1) % 2], r)) for i, r in enumerate(recipients)]
        for inbox in inboxes:
            await asyncio.wait_for(inbox.opened.wait(), 10)
        expected: dict[str, set[bytes]] = {r.name: set() for r in recipients}

        async def send_all(sender: Member) -> None:
            for recipient in recipients:
                batch = [envelope(sender.name, recipient.name) for _ in range(25)]
                expected[recipient.name] |= {Envelope.from_bytes(e).message_id for e in batch}
                await sender.client.send(batch)

        await asyncio.gather(*(send_all(s) for s in senders))
        for inbox in inboxes:
            want = expected[inbox.member.name]
            await eventually(lambda inbox=inbox, want=want: set(inbox.seen) == want)
        await asyncio.sleep(0.5)  # nothing more arrives: no envelope is pushed twice
        for inbox in inboxes:
            assert set(inbox.seen) == expected[inbox.member.name]
            assert set(inbox.seen.values()) == {1}
            await inbox.stop()
        assert sum(len(ids) for ids in expected.values()) == 400
        for member in senders + recipients:
            await member.client.close()


async def test_one_mailbox_fed_through_both_relays_at_once_misses_nothing_live(
    postgres: Backend,
) -> None:
    """Sends to one recipient through its own relay and the other one, interleaved: a commit
    made next to the recipient's socket must not overtake an earlier one whose wake-up is still
    on its way from the other process (the socket would move past it and never push it)."""
    with two_relays(postgres) as relays:
        recipient = await join(relays[1], "recipient")
        senders = [await join(relays[i % 2], "sender") for i in range(6)]
        inbox = Inbox(recipient)
        await asyncio.wait_for(inbox.opened.wait(), 10)
        expected: set[bytes] = set()

        async def send_singles(sender: Member) -> None:
            for _ in range(60):
                single = envelope(sender.name, recipient.name)
                expected.add(Envelope.from_bytes(single).message_id)
                await sender.client.send([single])

        await asyncio.gather(*(send_singles(s) for s in senders))
        # Then more at once than one round of the other relay's mailbox reads takes.
        burst = [envelope(senders[i // 175 * 2].name, recipient.name) for i in range(350)]
        expected |= {Envelope.from_bytes(e).message_id for e in burst}
        await asyncio.gather(
            senders[0].client.send(burst[:175]), senders[2].client.send(burst[175:])
        )
        await eventually(lambda: set(inbox.seen) == expected, timeout=15)
        assert set(inbox.seen.values()) == {1}
        await inbox.stop()
        for member in senders:
            await member.client.close()


async def test_the_same_acknowledgement_through_both_relays_at_once_counts_once(
    postgres: Backend,
) -> None:
    with two_relays(postgres) as relays:
        sender = await join(relays[0], "sender")
        recipient = await join(relays[0], "recipient")
        twin = await relogin(relays[1], recipient)
        for _ in range(2):
            await sender.client.send([envelope(sender.name, recipient.name) for _ in range(150)])
        stored = await mailbox_ids(recipient)
        assert len(stored) == 300
        ids = sorted(stored)
        halves = [ids[i::2] + ids[1 - i :: 2] for i in (0, 1)]  # all of them, in other orders
        counts = await asyncio.gather(
            *(
                member.client.acknowledge(chunk)
                for member, half in zip((recipient, twin), halves, strict=True)
                for chunk in (half[:150], half[150:])
            )
        )
        assert sum(counts) == 300  # each envelope deleted once, counted by whoever deleted it
        assert await mailbox_ids(twin) == {}
        for member in (sender, recipient, twin):
            await member.client.close()


async def test_one_time_prekeys_fetched_through_both_relays_are_never_shared(
    postgres: Backend,
) -> None:
    with two_relays(postgres) as relays:
        owner = await join(relays[0], "owner", one_time=40)
        fetchers = [await join(relays[i % 2], "fetcher") for i in range(6)]

        async def fetch(fetcher: Member) -> list[int | None]:
            taken = []
            for _ in range(10):
                raw, _ = await fetcher.client.fetch_bundle(owner.name)
                one_time = PrekeyBundle.from_bytes(raw).one_time_prekey
                taken.append(None if one_time is None else one_time.id)
            return taken

        results = await asyncio.gather(*(fetch(f) for f in fetchers))
        handed = [key for taken in results for key in taken if key is not None]
        assert len(handed) == 40 and len(set(handed)) == 40  # all of them, each once
        assert sum(key is None for taken in results for key in taken) == 20  # then none
        for member in [owner, *fetchers]:
            await member.client.close()


async def test_killing_one_relay_loses_nothing_it_acknowledged(postgres: Backend) -> None:
    with two_relays(postgres) as (doomed, survivor):
        sender = await join(doomed, "sender")
        recipient = await join(survivor, "recipient")
        inbox = Inbox(await relogin(survivor, recipient))
        await asyncio.wait_for(inbox.opened.wait(), 10)
        acknowledged: set[bytes] = set()

        async def keep_sending() -> None:
            while True:
                batch = [envelope(sender.name, recipient.name) for _ in range(10)]
                try:
                    receipts = await sender.client.send(batch)
                except (RelayUnreachable, RelayRequestError):
                    return  # the relay died under this request: not acknowledged
                acknowledged.update(bytes.fromhex(r["message_id"]) for r in receipts)

        sending = asyncio.create_task(keep_sending())
        await eventually(lambda: len(acknowledged) >= 200)
        doomed.kill()  # SIGKILL, mid-stream
        await asyncio.wait_for(sending, 10)
        await eventually(lambda: acknowledged <= set(inbox.seen))
        await inbox.stop()
        await sender.client.close()


async def test_the_rate_limit_is_one_limit_across_processes(postgres: Backend) -> None:
    """A client spreading its requests over both relays gets the configured burst once, not
    once per process: the buckets live in the database."""
    strict = ("--rate-burst", "6", "--rate-per-second", "0.01", "--public-rate-burst", "1000")
    with two_relays(postgres, *strict) as relays:
        first = await join(relays[0], "limited")  # registration and login are not counted
        second = await relogin(relays[1], first)
        allowed = 0
        refusal = None
        for attempt in range(12):
            client = (first, second)[attempt % 2].client
            try:
                await client.prekey_counts()
                allowed += 1
            except RelayRequestError as exc:
                refusal = exc
                break
        assert allowed == 6 and refusal is not None
        assert (refusal.status, refusal.code) == (429, "rate_limited")
        assert refusal.retry_after is not None and refusal.retry_after >= 1
        for member in (first, second):
            await member.client.close()
