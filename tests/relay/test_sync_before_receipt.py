"""No receipt leaves the relay before the sync that makes its envelope durable (issue 20, 1).

SIGKILL keeps the page cache, so the crash tests prove the order against the process only; a
power loss needs the sync. Here a real relay runs under `strace -f` during 1,000 sends (one
envelope per `POST /v1/messages`) and then 1,000 acknowledgements (one id per
`POST /v1/messages/ack`, a delete being as much a promise as a store), and every answer is
checked in the trace, by the envelope's own bytes (its sender's name and message id):

- SQLite, default settings: the first write-ahead-log frame holding the envelope (for an
  acknowledgement: the first frame after the request after which no page of the log holds it
  any more), then the commit frame of that transaction, then an fsync or fdatasync of the
  `-wal` file that starts after that frame was written and returns before the first byte of the
  HTTP answer is sent. One sync may cover many answers (group commit): that is the design.
- PostgreSQL: the sync happens in the server, whose processes the relay's test cannot rely on
  tracing (they belong to another user and other tests share them). Checked instead, the
  strongest that holds wherever the suite runs: the server syncs its log before it answers a
  COMMIT (`fsync` and `synchronous_commit` are `on`, queried), and in the relay's trace the
  Bind message carrying the envelope (for an acknowledgement: its id) goes out on a database
  socket, that socket's `COMMIT` reply comes back, and only then does the HTTP answer leave.

The trace is read in the order strace wrote it: a thread stopped at a system call's exit is
held until strace has recorded it, so that order never contradicts causality.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backchannel_relay.database import commit_durability

from .conftest import (
    GENEROUS,
    RELAY,
    Backend,
    Member,
    Relay,
    _pg,
    free_port,
    join,
    require_postgres,
)
from .test_api import envelope

SENDS = 1000
CONCURRENCY = 8
STRACE = [
    *("strace", "-f", "-qq", "-yy", "-xx", "-s", "65536", "--seccomp-bpf"),
    *("-e", "trace=pwrite64,pwritev,write,writev,sendto,sendmsg,recvfrom,fsync,fdatasync"),
]
RATES = (*GENEROUS, "--read-burst", "100000", "--read-per-second", "100000")
COMMIT_REPLY = b"C\x00\x00\x00\x0bCOMMIT\x00"  # PostgreSQL's CommandComplete for COMMIT
FRAME_HEADER = 24  # SQLite WAL: each frame is a 24-byte header, then the page


@dataclass
class Call:
    """One traced system call: where its entry and its exit are in the trace."""

    start: int
    end: int
    pid: int
    name: str
    target: str  # the fd's path, or the socket as `TCP:[local->peer]`
    data: bytes
    offset: int | None


_LINE = re.compile(r"^(\d+) +(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")
_STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")


def _text(escaped: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), escaped)


def parse_trace(path: Path) -> list[Call]:
    """The calls of an `strace -f -yy -xx` log, unfinished and resumed halves joined."""
    calls: list[Call] = []
    open_calls: dict[int, tuple[int, str, str]] = {}
    with path.open(errors="replace") as lines:
        for index, line in enumerate(lines):
            match = _LINE.match(line.rstrip("\n"))
            if match is None:
                continue
            pid = int(match.group(1))
            rest = match.group(4)
            if match.group(3) is not None:  # an entry
                name, start = match.group(3), index
                if rest.endswith("<unfinished ...>"):
                    open_calls[pid] = (index, name, rest)
                    continue
            else:
                begun = open_calls.pop(pid, None)
                if begun is None:
                    continue
                start, name, first = begun
                rest = first.removesuffix("<unfinished ...>") + rest
            fd = re.match(r"(\d+)<(\w+:\[[^\]]*\]|[^>]*)>", rest)
            if fd is None:
                continue
            data = b"".join(bytes.fromhex(s.replace("\\x", "")) for s in _STRING.findall(rest))
            offset = None
            if name == "pwrite64":
                tail = re.search(r", (\d+) *\) += ", rest)
                offset = int(tail.group(1)) if tail else None
            calls.append(Call(start, index, pid, name, _text(fd.group(2)), data, offset))
    return calls


SENT = ("sendto", "sendmsg", "write", "writev")


def answers(calls: list[Call], port: int) -> Iterator[tuple[Call, Call, bytes]]:
    """-> (the request's last read, the first send of its answer, the answer's bytes) for
    every HTTP exchange on the relay's port, in the order they happened."""
    local = f":{port}->"
    last_read: dict[str, Call] = {}
    answering: dict[str, tuple[Call, Call, bytearray]] = {}
    for call in calls:
        if local not in call.target:
            continue
        if call.name == "recvfrom" and call.data:
            done = answering.pop(call.target, None)
            if done is not None:
                yield done[0], done[1], bytes(done[2])
            last_read[call.target] = call
        elif call.name in SENT and call.target in last_read:
            if call.target not in answering:
                answering[call.target] = (last_read[call.target], call, bytearray())
            answering[call.target][2].extend(call.data)
    for request, first, data in answering.values():
        yield request, first, bytes(data)


def body(data: bytes) -> object:
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def message_ids(data: bytes, marker: bytes) -> Iterator[bytes]:
    """The message ids of the envelopes in `data`: the 16 bytes after the sender's name."""
    at = data.find(marker)
    while at >= 0:
        yield data[at + len(marker) : at + len(marker) + 16]
        at = data.find(marker, at + 1)


@dataclass
class Traced:
    calls: list[Call]
    port: int
    marker: bytes
    """The envelope bytes before the message id: the sender's name with its length."""
    seq_of: dict[bytes, int] = field(default_factory=dict)


def sqlite_verdicts(traced: Traced) -> tuple[int, int]:
    """-> (receipts after their sync, acknowledgements after theirs), out of 1,000 each."""
    frames: list[tuple[Call, int, bool]] = []  # (the page's write, page number, commits)
    headers: dict[tuple[int, int], Call] = {}
    syncs: list[Call] = []
    for call in traced.calls:
        if not call.target.endswith("-wal"):
            continue
        if call.name in ("fsync", "fdatasync"):
            syncs.append(call)
        elif call.name == "pwrite64" and call.offset is not None:
            if len(call.data) == FRAME_HEADER:
                headers[(call.pid, call.offset + FRAME_HEADER)] = call
            elif (header := headers.pop((call.pid, call.offset), None)) is not None:
                number = int.from_bytes(header.data[:4], "big")
                frames.append((call, number, header.data[4:8] != b"\0\0\0\0"))

    def synced_between(after: int, before: int) -> bool:
        return any(after < s.start and s.end < before for s in syncs)

    def commit_after(position: int) -> int | None:
        for write, _, commits in frames[position:]:
            if commits:
                return write.end
        return None

    first_frame: dict[bytes, int] = {}
    holders: dict[bytes, set[int]] = {}  # message id -> pages whose newest frame holds it
    gone_at: dict[bytes, list[int]] = {}  # message id -> frames after which no page held it
    pages: dict[int, set[bytes]] = {}
    for position, (write, number, _) in enumerate(frames):
        now = set(message_ids(write.data, traced.marker)) & traced.seq_of.keys()
        for mid in pages.get(number, set()) - now:
            holders[mid].discard(number)
            if not holders[mid]:
                gone_at.setdefault(mid, []).append(position)
        for mid in now:
            first_frame.setdefault(mid, position)
            holders.setdefault(mid, set()).add(number)
        pages[number] = now

    receipts = acknowledged = 0
    for request, first, data in answers(traced.calls, traced.port):
        answer = body(data)
        assert isinstance(answer, dict)
        if "receipts" in answer:
            mid = bytes.fromhex(answer["receipts"][0]["message_id"])
            if mid in first_frame:
                commit = commit_after(first_frame[mid])
                receipts += commit is not None and synced_between(commit, first.start)
        elif answer.get("acknowledged") == 1:
            seq = int(json.loads(request.data.split(b"\r\n\r\n", 1)[1])["ids"][0])
            mid = next(m for m, s in traced.seq_of.items() if s == seq)
            after = [p for p in gone_at.get(mid, []) if frames[p][0].start > request.end]
            if after:
                commit = commit_after(after[0])
                acknowledged += commit is not None and synced_between(commit, first.start)
    return receipts, acknowledged


def postgres_verdicts(traced: Traced) -> tuple[int, int]:
    """-> (receipts after their COMMIT reply, acknowledgements after theirs)."""
    database = [c for c in traced.calls if c.target.endswith(":5432]")]
    bound: dict[bytes, Call] = {}
    for call in database:
        if call.name in SENT:
            for mid in message_ids(call.data, traced.marker):
                bound.setdefault(mid, call)
    replies = [c for c in database if c.name == "recvfrom" and COMMIT_REPLY in c.data]

    def committed_between(write: Call, before: int) -> bool:
        return any(
            r.target == write.target and write.end < r.start and r.end < before for r in replies
        )

    receipts = acknowledged = 0
    for request, first, data in answers(traced.calls, traced.port):
        answer = body(data)
        assert isinstance(answer, dict)
        if "receipts" in answer:
            mid = bytes.fromhex(answer["receipts"][0]["message_id"])
            receipts += mid in bound and committed_between(bound[mid], first.start)
        elif answer.get("acknowledged") == 1:
            seq = int(json.loads(request.data.split(b"\r\n\r\n", 1)[1])["ids"][0])
            element = b"\0\0\0\x08" + seq.to_bytes(8, "big")  # in a binary int8 array
            deletes = (
                c
                for c in database
                if c.name in SENT and request.end < c.start < first.start and element in c.data
            )
            delete = next(deletes, None)
            acknowledged += delete is not None and committed_between(delete, first.start)
    return receipts, acknowledged


class TracedRelay(Relay):
    """A relay under strace. Stopping it signals the relay, never strace: strace would detach
    on SIGTERM and leave the relay running."""

    trace_path: Path

    startup_seconds = 60.0

    def command(self) -> list[str]:
        assert shutil.which("strace"), "strace is missing: `make strace` installs it"
        return [*STRACE, "-o", str(self.trace_path), *super().command()]

    def start(self) -> None:
        self.trace_path = self.workdir / f"strace-{self.port}.log"
        super().start()

    def stop(self) -> None:
        if self.process is None:
            return
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for pid in children.read_text().split() if children.exists() else ():
            os.kill(int(pid), signal.SIGTERM)
        self.process.wait(timeout=30)
        self.process = None


async def pg_settings(backend: Backend) -> dict[str, str]:
    """What the server does at COMMIT: sync its log (`fsync`), and answer only after
    (`synchronous_commit`)."""
    import asyncpg

    connection = await asyncpg.connect(backend.store_args[1].replace("+asyncpg", ""))
    try:
        return {
            name: str(await connection.fetchval(f"SHOW {name}"))
            for name in ("fsync", "synchronous_commit")
        }
    finally:
        await connection.close()


async def exchange(relay: Relay) -> tuple[Member, dict[bytes, int]]:
    """1,000 sends, then 1,000 acknowledgements, `CONCURRENCY` at a time."""
    alice, bob = await join(relay), await join(relay)
    seq_of: dict[bytes, int] = {}

    async def send(count: int) -> None:
        for _ in range(count):
            data = envelope(alice.name, bob.name, size=64)
            (receipt,) = await alice.client.send([data])
            seq_of[bytes.fromhex(receipt["message_id"])] = int(receipt["id"])

    await asyncio.gather(*(send(SENDS // CONCURRENCY) for _ in range(CONCURRENCY)))
    seqs = sorted(seq_of.values())

    async def acknowledge(mine: list[int]) -> None:
        for seq in mine:
            assert await bob.client.acknowledge([seq]) == 1

    await asyncio.gather(*(acknowledge(seqs[i::CONCURRENCY]) for i in range(CONCURRENCY)))
    for member in (alice, bob):
        await member.client.close()
    return alice, seq_of


async def test_no_answer_before_the_sync_that_covers_it(backend: Backend, tmp_path: Path) -> None:
    if backend.name == "postgresql":
        assert await pg_settings(backend) == {"fsync": "on", "synchronous_commit": "on"}
        store = Backend(backend.name, backend.store_args, tmp_path)
    else:
        store = Backend("sqlite", ["--data-dir", str(tmp_path / "data")], tmp_path)
    relay = TracedRelay(store.store_args, tmp_path, [*RATES])
    relay.start()
    try:
        began = time.monotonic()
        alice, seq_of = await exchange(relay)
        took = time.monotonic() - began
    finally:
        relay.stop()
    assert len(seq_of) == SENDS
    name = alice.name.encode()
    traced = Traced(parse_trace(relay.trace_path), relay.port, bytes([len(name)]) + name, seq_of)
    verdicts = postgres_verdicts if backend.name == "postgresql" else sqlite_verdicts
    receipts, acknowledged = verdicts(traced)
    print(f"\n{backend.name}: receipts {receipts}/{SENDS}, acknowledgements {acknowledged}/{SENDS}"
          f" after their sync ({took:.1f} s under strace)")  # fmt: skip
    assert (receipts, acknowledged) == (SENDS, SENDS)
    assert took < 60
    relay.trace_path.unlink()  # about 90 MB; kept when the test fails


@pytest.mark.parametrize("late", [False, True])
def test_the_check_sees_an_answer_before_its_sync(late: bool) -> None:
    """The checker itself: the same exchange with the sync moved after the answer fails."""
    marker, mid = b"\x05alice", bytes(range(16))
    page = b"\0" * 100 + marker + mid + b"\0" * 100
    http = "TCP:[127.0.0.1:8000->127.0.0.1:40000]"
    request = b"POST /v1/messages HTTP/1.1\r\n\r\n{}"
    response = b'HTTP/1.1 200 OK\r\n\r\n{"receipts": [{"message_id": "%s"}]}' % mid.hex().encode()
    header = b"\0\0\0\x02\0\0\0\x02" + b"\0" * 16
    steps = [
        Call(0, 0, 1, "recvfrom", http, request, None),
        Call(1, 1, 2, "pwrite64", "relay.sqlite3-wal", header, 32),
        Call(2, 2, 2, "pwrite64", "relay.sqlite3-wal", page, 56),
        Call(3, 3, 2, "fdatasync", "relay.sqlite3-wal", b"", None),
        Call(4, 4, 1, "sendto", http, response, None),
    ]
    if late:
        steps[3], steps[4] = (
            Call(4, 4, 2, "fdatasync", "relay.sqlite3-wal", b"", None),
            Call(3, 3, 1, "sendto", http, response, None),
        )
        steps.sort(key=lambda c: c.start)
    traced = Traced(steps, 8000, marker, {mid: 1})
    assert sqlite_verdicts(traced) == ((0 if late else 1), 0)


def test_commit_durability_decisions() -> None:
    assert commit_durability({"fsync": "on", "synchronous_commit": "on"}, False) == (None, None)
    refused, warned = commit_durability({"fsync": "on", "synchronous_commit": "off"}, False)
    assert refused is not None and "synchronous_commit=off" in refused and warned is None
    refused, warned = commit_durability({"fsync": "off", "synchronous_commit": "on"}, True)
    assert refused is None and warned is not None and "fsync=off" in warned
    refused, warned = commit_durability({"fsync": "on", "synchronous_commit": "local"}, False)
    assert refused is None and warned is not None and "standby" in warned


@pytest.mark.parametrize("level", ["off", "local"])
def test_relay_refuses_or_warns_on_an_unsafe_commit(level: str, tmp_path: Path) -> None:
    """`synchronous_commit=off` on the relay's database: it refuses to start in one line, or
    starts with a warning when told to; `local` starts with a warning."""
    require_postgres()
    database = f"bc_test_{uuid.uuid4().hex[:12]}"
    _pg(f'CREATE DATABASE "{database}"')
    _pg(f'ALTER DATABASE "{database}" SET synchronous_commit = {level}')
    store = ["--database", f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"]
    try:
        if level == "off":
            refused = subprocess.run(
                [*RELAY, "serve", "--port", str(free_port()), *store],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert refused.returncode != 0
            errors = [line for line in refused.stderr.splitlines() if "rror" in line]
            assert len(errors) == 1 and "synchronous_commit=off" in errors[0], refused.stderr
            assert "--allow-unsafe-commit" in errors[0] and "Traceback" not in refused.stderr
        extra = ["--allow-unsafe-commit"] if level == "off" else []
        relay = Relay(store, tmp_path, extra)
        relay.start()
        relay.kill(signal.SIGTERM)
        assert f"synchronous_commit={level}" in relay.log()
    finally:
        _pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
