"""What the relay promises beyond its API: nothing it answered for is lost to `kill -9`, and
nothing that names a participant or carries content reaches its logs or its metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from pathlib import Path

import aiohttp
import pytest

from backchannel_cli.relay import RelayClient, RelayRequestError, RelayUnreachable

from .conftest import GENEROUS, Backend, Member, Relay, join, make_relay
from .test_api import envelope


def own_store(backend: Backend, tmp_path: Path) -> Backend:
    """A SQLite store of the test's own (one writer process per file); on PostgreSQL the shared
    database, which several relay processes may serve at once."""
    if backend.name == "sqlite":
        return Backend("sqlite", ["--data-dir", str(tmp_path / "data")], tmp_path)
    return Backend(backend.name, backend.store_args, tmp_path)


async def relogin(relay: Relay, member: Member) -> Member:
    client = RelayClient(relay.url)
    await client.login(member.identity, member.name)
    return Member(member.name, member.identity, member.prekeys, client)


async def mailbox_ids(member: Member) -> dict[int, bytes]:
    """Every envelope waiting for `member`, by relay id, read page by page."""
    found: dict[int, bytes] = {}
    after = 0
    while True:
        page, more = await member.client.mailbox(after=after, limit=100)
        found.update((item.id, item.envelope) for item in page)
        if not more or not page:
            return found
        after = page[-1].id


async def test_every_receipted_send_survives_kill_9(backend: Backend, tmp_path: Path) -> None:
    store = own_store(backend, tmp_path)
    relay = make_relay(store, *GENEROUS)  # the senders outrun the default send budget
    alice, bob = await join(relay), await join(relay)
    receipted: dict[int, bytes] = {}
    first_receipts = asyncio.Event()

    async def keep_sending(sender: Member) -> None:
        while True:
            batch = [envelope(sender.name, bob.name) for _ in range(8)]
            try:
                receipts = await sender.client.send(batch)
            except (RelayUnreachable, aiohttp.ClientError):
                return  # the relay died under this request: no receipt, no promise
            receipted.update((r["id"], body) for r, body in zip(receipts, batch, strict=True))
            if len(receipted) >= 200:
                first_receipts.set()

    senders = [asyncio.create_task(keep_sending(alice)) for _ in range(8)]
    await asyncio.wait_for(first_receipts.wait(), 60)
    relay.kill()  # SIGKILL while the senders are mid-flight
    await asyncio.gather(*senders)
    for member in (alice, bob):
        await member.client.close()

    restarted = make_relay(store)
    try:
        reader = await relogin(restarted, bob)
        stored = await mailbox_ids(reader)
        await reader.client.close()
    finally:
        restarted.kill()
    missing = receipted.keys() - stored.keys()
    assert not missing, f"{len(missing)} of {len(receipted)} receipted envelopes were lost"
    assert all(stored[seq] == body for seq, body in receipted.items())


async def test_an_acknowledged_envelope_stays_deleted_after_kill_9(
    backend: Backend, tmp_path: Path
) -> None:
    store = own_store(backend, tmp_path)
    relay = make_relay(store)
    alice, bob = await join(relay), await join(relay)
    await alice.client.send([envelope(alice.name, bob.name) for _ in range(5)])
    page, _ = await bob.client.mailbox()
    assert await bob.client.acknowledge([item.id for item in page[:3]]) == 3
    relay.kill()
    for member in (alice, bob):
        await member.client.close()
    restarted = make_relay(store)
    try:
        reader = await relogin(restarted, bob)
        assert sorted(await mailbox_ids(reader)) == [item.id for item in page[3:]]
        await reader.client.close()
    finally:
        restarted.kill()


def secrets_of(member: Member) -> list[str]:
    """Strings that would identify `member` if they appeared in a log or a metric."""
    key = member.identity.public.to_bytes()
    return [
        member.name,
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
        key.hex(),
    ]


async def traffic(relay: Relay) -> tuple[list[Member], list[bytes]]:
    """Registration, login, directory, prekeys, sends, fetch, acknowledgement, live delivery and
    a few refusals: every kind of request a participant makes."""
    alice, bob = await join(relay, "hygiene"), await join(relay, "hygiene")
    await alice.client.directory()
    await alice.client.fetch_bundle(bob.name)
    sent = [envelope(alice.name, bob.name) for _ in range(3)]
    await alice.client.send(sent)
    live = asyncio.create_task(_first_push(bob))
    await asyncio.sleep(0.2)
    await alice.client.send([envelope(alice.name, bob.name)])
    await asyncio.wait_for(live, 10)
    page, _ = await bob.client.mailbox()
    await bob.client.acknowledge([item.id for item in page])
    with contextlib.suppress(RelayRequestError):
        await alice.client.fetch_bundle(bob.name + "-nobody")
    with contextlib.suppress(RelayRequestError):
        await alice.client.send([envelope(alice.name, bob.name + "-nobody")])
    for member in (alice, bob):
        await member.client.close()
    return [alice, bob], sent


async def _first_push(member: Member) -> None:
    async for _ in member.client.live():
        return


def _content_fragments(bodies: list[bytes]) -> list[str]:
    """Pieces of the envelopes as they travel (base64) and as stored (hex)."""
    out = []
    for body in bodies:
        out.append(base64.b64encode(body).decode()[-40:])
        out.append(body[-24:].hex())
    return out


async def test_logs_and_metrics_name_no_participant_and_carry_no_content(relay: Relay) -> None:
    members, sent = await traffic(relay)
    async with aiohttp.ClientSession() as session, session.get(relay.url + "/metrics") as answer:
        metrics = await answer.text()
    log = relay.log()
    assert "GET /v1/directory" in log, "the access log is on for this relay"
    for secret in [s for m in members for s in secrets_of(m)] + _content_fragments(sent):
        assert secret not in log
        assert secret not in metrics
    names = {m.name for m in members}
    for labels in re.findall(r"\{([^}]*)\}", metrics):
        assert not any(name in labels for name in names)
        assert "hygiene" not in labels
    paths = set(re.findall(r'path="([^"]*)"', metrics)) | set(
        re.findall(r'route="([^"]*)"', metrics)
    )
    assert all("hygiene" not in path for path in paths)


async def test_no_access_log_writes_no_request_lines(backend: Backend, tmp_path: Path) -> None:
    quiet = make_relay(own_store(backend, tmp_path), "--no-access-log")
    try:
        members, sent = await traffic(quiet)
    finally:
        quiet.kill()
    log = quiet.log()
    assert "/v1/" not in log and "GET " not in log and "POST " not in log
    for secret in [s for m in members for s in secrets_of(m)] + _content_fragments(sent):
        assert secret not in log


@pytest.mark.parametrize("flag", ["--port", "--database"])
def test_bad_serve_flags_get_one_line_and_a_nonzero_exit(flag: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    value = {"--port": "not-a-port", "--database": "mysql://nowhere/x"}[flag]
    done = subprocess.run(
        [sys.executable, "-m", "backchannel_relay", "serve", "--data-dir", str(tmp_path), flag,
         value],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip(), "a reason is given"


async def test_a_send_to_one_process_wakes_a_socket_on_another(postgres: Backend) -> None:
    first, second = make_relay(postgres), make_relay(postgres)
    try:
        alice, bob = await join(first), await join(first)
        on_second = await relogin(second, bob)
        opened = asyncio.Event()
        received: list[bytes] = []

        async def listen() -> None:
            async for pushed, _ in on_second.client.live(on_open=opened.set):
                received.append(pushed.envelope)
                return

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(opened.wait(), 10)
        await asyncio.sleep(0.3)  # the socket has read its (empty) mailbox and waits
        sent = envelope(alice.name, bob.name)
        await alice.client.send([sent])
        await asyncio.wait_for(listener, 10)
        assert received == [sent]
        for member in (alice, bob, on_second):
            await member.client.close()
    finally:
        first.kill()
        second.kill()


def test_wakeup_payloads_cover_every_recipient_within_the_size_limit() -> None:
    from backchannel_relay.wakeups import MAX_PAYLOAD, parse, payloads

    ids = [*range(1, 5000, 3), 7, 7, 7]
    chunks = payloads("abc", ids)
    assert all(len(chunk.encode()) <= MAX_PAYLOAD for chunk in chunks)
    assert sorted(i for chunk in chunks for i in parse(chunk, "other")) == sorted(set(ids))
    assert all(parse(chunk, "abc") == [] for chunk in chunks)  # a process skips its own
    assert parse("xyz:1,nope", "abc") == [] and payloads("abc", []) == []
