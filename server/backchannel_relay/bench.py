"""`backchannel-relay bench`: drive a relay with simulated clients over real sockets.

Four phases, each against loopback sockets and a relay in another process:

- **throughput**: `senders` clients each POST batches of `batch` 512-byte envelopes (closed loop:
  the next batch leaves when the previous one's receipts are back) to `recipients` clients that
  drain their mailboxes over WebSockets and acknowledge on the socket. The figure is receipts per
  second (envelopes the relay answered as committed), counted over a window after a warm-up; the
  delivered rate over the same window and the backlog left at its end tell whether it was sustained.
- **latency**: one-envelope requests paced at `rate` per second (open loop, round robin over the
  senders); each envelope's time from the start of its POST to its arrival on the recipient's
  WebSocket, p50 and p99, after a warm-up at the same pace.
- **fetch**: `GET /v1/messages?limit=100` for a participant with 100 envelopes queued, timed when
  other mailboxes hold about 1,000 and then about `fill` envelopes.
- **ceiling**: a bare aiohttp WebSocket forwarder (below, in its own process) that copies each frame
  from a sender's socket to its receiver's, driven by the same number of clients with frames of the
  size the relay pushes: the most any Python relay on this machine could move.

The relay is started here (a subprocess on a free port with a temporary SQLite directory, or
`--database URL`) unless `--relay URL` names a running one (then `--admin-token` is needed to create
the participants). Participants are registered for real (identity, prekeys, proof, login).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from backchannel.encoding import Writer
from backchannel.envelope import ENVELOPE_VERSION, FLAG_HAS_SENDER, MESSAGE_ID_SIZE, Route
from backchannel.identity import IdentityKeyPair
from backchannel.prekeys import PrekeySecrets
from backchannel.relay_auth import sign_login, sign_registration

CIPHERTEXT_BYTES = 512
MAX_ACK = 500
"""The relay acknowledges at most this many ids per frame."""
FILL_PER_MAILBOX = 4_000
"""Below the relay's 10,000-envelope mailbox limit."""
FILL_EXPIRY = 900
"""Seconds: what the fetch phase leaves behind on a long-running relay expires soon."""
ENVELOPE_EXPIRY = 3_600
ALL_PHASES = ("throughput", "latency", "fetch", "ceiling")
EXTRA_PHASES = ("idle", "abuse")
"""Run only when asked for. `--phase idle` needs `idle_connections` participants' worth of
sockets and file descriptors; `--phase abuse` (bench_abuse.py) attacks a relay of its own that
keeps its default limits."""
WEBSOCKETS_PER_PARTICIPANT = 8


@dataclass(frozen=True, slots=True)
class BenchSettings:
    senders: int = 50
    recipients: int | None = None
    """None: as many as senders (sender i writes to recipient i)."""
    duration: float = 10.0
    warmup: float = 2.0
    batch: int = 64
    rate: float = 1_000.0
    latency_duration: float = 10.0
    fill: int = 100_000
    fetch_repeats: int = 200
    drain_timeout: float = 30.0
    phases: tuple[str, ...] = ALL_PHASES
    idle_connections: int = 5_000

    @property
    def recipient_count(self) -> int:
        return self.recipients if self.recipients is not None else self.senders


@dataclass(slots=True)
class Report:
    relay: str
    store: str
    machine: str
    settings: dict[str, Any]
    throughput: dict[str, float] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    fetch: dict[str, float] = field(default_factory=dict)
    ceiling: dict[str, float] = field(default_factory=dict)
    idle: dict[str, float] = field(default_factory=dict)
    abuse: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def machine_description() -> str:
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}"
    )


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Subprocess:
    """A child process whose output goes to files (no pipe to fill), stopped with SIGTERM."""

    def __init__(self, argv: list[str], workdir: Path) -> None:
        self.workdir = workdir
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


async def wait_healthy(url: str, process: Subprocess | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process is not None and process.process.poll() is not None:
                raise RuntimeError(
                    f"the process exited with {process.process.returncode}: "
                    f"{process.errors()[-2000:]}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer /healthz within {timeout:.0f} s")


@dataclass(slots=True)
class RelayHandle:
    url: str
    admin_token: str | None
    store: str
    process: Subprocess | None = None


@contextlib.asynccontextmanager
async def started_relay(
    database_url: str | None = None, sweep_interval: float = 3600.0
) -> AsyncIterator[RelayHandle]:
    """A relay subprocess on a free port, rate limits out of the way, access log off."""
    with tempfile.TemporaryDirectory(prefix="backchannel-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "backchannel_relay",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--rate-burst",
            "1000000000",
            "--rate-per-second",
            "1000000000",
            "--public-rate-burst",
            "1000000000",
            "--send-burst",
            "1000000000",
            "--send-per-second",
            "1000000000",
            "--read-burst",
            "1000000000",
            "--read-per-second",
            "1000000000",
            "--sender-share-envelopes",
            "1000000000",
            "--sender-share-bytes",
            "1000000000000",
            "--sweep-interval",
            str(sweep_interval),
        ]
        if database_url is None:
            argv += ["--data-dir", str(workdir / "data")]
            store = "SQLite (WAL, synchronous=FULL) in a temporary directory"
        else:
            argv += ["--database", database_url]
            store = database_url.split("://", 1)[0]
        process = Subprocess(argv, workdir)
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(url, process)
            yield RelayHandle(url, admin_token_from(process.output()), store, process)
        finally:
            process.stop()


def admin_token_from(output: str) -> str | None:
    """The token `serve` prints once, on the first start of a store."""
    for line in output.splitlines():
        if line.startswith("Admin token"):
            return line.rsplit(":", 1)[1].strip()
    return None


# --- participants ------------------------------------------------------------------------------


@dataclass(slots=True)
class Participant:
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _encoded(prekey: Any) -> str:
    writer = Writer()
    prekey.write(writer)
    return b64(bytes(writer))


async def _checked(response: aiohttp.ClientResponse) -> Any:
    body = await response.read()
    if response.status >= 400:
        where = f"{response.method} {response.url.path}"
        raise RuntimeError(f"{where}: {response.status} {body[:300]!r}")
    return json.loads(body)


async def register(
    session: aiohttp.ClientSession, url: str, admin_token: str, relay_id: bytes, name: str
) -> Participant:
    """Invite (admin API), register with real keys and proof, log in."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    async with session.post(
        url + "/v1/admin/invites", json={"name": name, "role": "party"}, headers=admin
    ) as response:
        invite = (await _checked(response))["invite"]
    identity = IdentityKeyPair.generate()
    secrets, signed = PrekeySecrets().add_signed_prekey(identity)
    _, (last_resort,) = secrets.add_kem_prekeys(identity, 1, last_resort=True)
    body = {
        "invite": invite,
        "name": name,
        "identity": b64(identity.public.to_bytes()),
        "proof": b64(sign_registration(identity, relay_id, invite, name)),
        "signed_prekey": _encoded(signed),
        "kem_last_resort": _encoded(last_resort),
    }
    async with session.post(url + "/v1/register", json=body) as response:
        await _checked(response)
    async with session.post(url + "/v1/auth/challenge", json={"name": name}) as response:
        challenge = base64.b64decode((await _checked(response))["challenge"])
    body = {
        "name": name,
        "challenge": b64(challenge),
        "signature": b64(sign_login(identity, relay_id, challenge, name)),
    }
    async with session.post(url + "/v1/auth/token", json=body) as response:
        token: str = (await _checked(response))["token"]
    return Participant(name, token)


async def register_all(
    session: aiohttp.ClientSession, url: str, admin_token: str, names: Sequence[str]
) -> list[Participant]:
    async with session.get(url + "/v1/info") as response:
        relay_id = base64.b64decode((await _checked(response))["relay_id"])
    gate = asyncio.Semaphore(8)

    async def one(name: str) -> Participant:
        async with gate:
            return await register(session, url, admin_token, relay_id, name)

    return list(await asyncio.gather(*(one(name) for name in names)))


# --- envelopes ---------------------------------------------------------------------------------


class EnvelopeFactory:
    """Encoded DIRECT envelopes from one sender to one recipient, each with a fresh message id
    and 512 fresh random bytes of ciphertext (the PROTOCOL.md §8 layout, spliced for speed)."""

    def __init__(self, sender: str, recipient: str, expires_in: int = ENVELOPE_EXPIRY) -> None:
        head = Writer().u8(ENVELOPE_VERSION).u8(FLAG_HAS_SENDER)
        head.var8(recipient.encode()).var8(sender.encode())
        self.head = bytes(head)
        self.expires_at = int(time.time()) + expires_in
        tail = Writer().u8(Route.DIRECT).u64(self.expires_at).u32(CIPHERTEXT_BYTES)
        self.tail = bytes(tail)

    def make(self) -> tuple[bytes, bytes]:
        """-> (message id, encoded envelope)."""
        fresh = os.urandom(MESSAGE_ID_SIZE + CIPHERTEXT_BYTES)
        message_id = fresh[:MESSAGE_ID_SIZE]
        return message_id, self.head + message_id + self.tail + fresh[MESSAGE_ID_SIZE:]

    def request_body(self, count: int) -> tuple[list[bytes], bytes]:
        """-> (message ids, the JSON body of a POST /v1/messages with `count` envelopes)."""
        ids: list[bytes] = []
        encoded: list[str] = []
        for _ in range(count):
            message_id, envelope = self.make()
            ids.append(message_id)
            encoded.append(b64(envelope))
        return ids, json.dumps({"envelopes": encoded}).encode()


def message_id_of(envelope: bytes) -> bytes:
    """The message id of an encoded envelope with a sender (PROTOCOL.md §8)."""
    at = 3 + envelope[2]
    at += 1 + envelope[at]
    return envelope[at : at + MESSAGE_ID_SIZE]


JSON_HEADERS = {"Content-Type": "application/json"}


async def post_envelopes(
    session: aiohttp.ClientSession, url: str, sender: Participant, body: bytes
) -> int:
    """POST one batch; -> how many receipts were new (not duplicates)."""
    async with session.post(
        url + "/v1/messages", data=body, headers={**sender.headers, **JSON_HEADERS}
    ) as response:
        answer = await _checked(response)
    return sum(1 for receipt in answer["receipts"] if not receipt["duplicate"])


# --- receiving ---------------------------------------------------------------------------------


class Receiver:
    """One recipient's WebSocket: counts arrivals, notes their time, acknowledges in batches."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        who: Participant,
        on_envelope: Callable[[bytes, float], None] | None = None,
    ) -> None:
        self.session = session
        self.url = url
        self.who = who
        self.on_envelope = on_envelope
        self.received = 0
        self._pending: list[int] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._ws = await self.session.ws_connect(
            self.url + "/v1/ws", headers=self.who.headers, max_msg_size=4 * 1024 * 1024
        )
        self._task = asyncio.create_task(self._read())
        self._flush_task = asyncio.create_task(self._flush())

    async def _read(self) -> None:
        assert self._ws is not None
        clock = time.perf_counter
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            if frame.get("type") != "envelope":
                continue
            self.received += 1
            if self.on_envelope is not None:
                self.on_envelope(message_id_of(base64.b64decode(frame["envelope"])), clock())
            self._pending.append(frame["id"])
            if len(self._pending) == 1:
                self._wake.set()

    async def _flush(self) -> None:
        """Acknowledge what arrived, a few frames at a time (as a real client would)."""
        assert self._ws is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.005)  # let a burst arrive, then acknowledge it in one frame
            while self._pending:
                ids, self._pending = self._pending[:MAX_ACK], self._pending[MAX_ACK:]
                await self._ws.send_str(json.dumps({"type": "ack", "ids": ids}))

    async def stop(self) -> None:
        for task in (self._task, self._flush_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._ws is not None:
            if self._pending:
                with contextlib.suppress(Exception):
                    await self._ws.send_str(json.dumps({"type": "ack", "ids": self._pending}))
            await self._ws.close()


@contextlib.asynccontextmanager
async def receivers(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    who: Sequence[Participant],
    on_envelope: Callable[[bytes, float], None] | None = None,
) -> AsyncIterator[list[Receiver]]:
    """Recipient i listens on relay (i + 1) mod n, and sender i posts to relay i mod n: with
    several relays, every envelope crosses from one process to another."""
    started = [Receiver(session, urls[(i + 1) % len(urls)], p, on_envelope)
               for i, p in enumerate(who)]  # fmt: skip
    try:
        await asyncio.gather(*(r.start() for r in started))
        yield started
    finally:
        await asyncio.gather(*(r.stop() for r in started), return_exceptions=True)


# --- progress ----------------------------------------------------------------------------------


class Phases:
    """Rich progress bars, one per phase (a no-op without a console)."""

    def __init__(self, console: Console | None) -> None:
        self.progress = (
            Progress(
                TextColumn("{task.description:<12}"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            if console is not None
            else None
        )

    def __enter__(self) -> Phases:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def add(self, name: str, total: float) -> TaskID | None:
        if self.progress is None:
            return None
        return self.progress.add_task(name, total=total, status="")

    def update(
        self, task: TaskID | None, completed: float, status: str = "", total: float | None = None
    ) -> None:
        if self.progress is not None and task is not None:
            self.progress.update(task, completed=completed, status=status, total=total)


@contextlib.contextmanager
def ticking(update: Callable[[], None], interval: float = 0.2) -> Iterator[None]:
    async def tick() -> None:
        while True:
            update()
            await asyncio.sleep(interval)

    task = asyncio.get_running_loop().create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        update()


# --- phase (a): throughput ---------------------------------------------------------------------


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def throughput_phase(
    urls: Sequence[str],
    senders: Sequence[Participant],
    recipients: Sequence[Participant],
    settings: BenchSettings,
    phases: Phases,
) -> dict[str, float]:
    """Closed-loop senders; -> accepted and delivered envelopes/s over the measured window."""
    task = phases.add("throughput", settings.warmup + settings.duration)
    async with _session() as session, receivers(session, urls, recipients) as inboxes:
        accepted = 0
        requests = 0
        stop = False
        factories = [
            EnvelopeFactory(s.name, recipients[i % len(recipients)].name)
            for i, s in enumerate(senders)
        ]

        async def sender(index: int) -> None:
            nonlocal accepted, requests
            factory = factories[index]
            while not stop:
                _, body = factory.request_body(settings.batch)
                url = urls[index % len(urls)]
                fresh = await post_envelopes(session, url, senders[index], body)
                accepted += fresh  # (not `+= await`: that would read `accepted` before waiting)
                requests += 1

        started = time.perf_counter()
        status = ""

        def show() -> None:
            elapsed = time.perf_counter() - started
            phases.update(task, min(elapsed, settings.warmup + settings.duration), status)

        with ticking(show):
            workers = [asyncio.create_task(sender(i)) for i in range(len(senders))]
            try:
                await asyncio.sleep(settings.warmup)
                a0, r0 = accepted, sum(r.received for r in inboxes)
                t0 = time.perf_counter()
                q0 = requests
                window_end = t0 + settings.duration
                while (now := time.perf_counter()) < window_end:
                    await asyncio.sleep(min(0.5, window_end - now))
                    elapsed = time.perf_counter() - t0
                    status = f"{(accepted - a0) / elapsed:,.0f} envelopes/s accepted"
                a1, r1 = accepted, sum(r.received for r in inboxes)
                t1 = time.perf_counter()
                q1 = requests
            finally:
                stop = True
                results = await asyncio.gather(*workers, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            backlog_at_end = a1 - r1
            # let the recipients drain what was accepted, so the next phase starts clean
            drain_started = time.perf_counter()
            while sum(r.received for r in inboxes) < accepted:
                if time.perf_counter() - drain_started > settings.drain_timeout:
                    break
                await asyncio.sleep(0.02)
            drained_in = time.perf_counter() - drain_started
            await asyncio.sleep(0.1)  # the last acknowledgements
        window = t1 - t0
        return {
            "accepted_per_s": (a1 - a0) / window,
            "delivered_per_s": (r1 - r0) / window,
            "requests_per_s": (q1 - q0) / window,
            "window_s": window,
            "accepted_in_window": float(a1 - a0),
            "backlog_at_end": float(max(0, backlog_at_end)),
            "drained_in_s": drained_in,
            "undelivered": float(max(0, accepted - sum(r.received for r in inboxes))),
        }


# --- phase (b): latency ------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (non-empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


async def latency_phase(
    urls: Sequence[str],
    senders: Sequence[Participant],
    recipients: Sequence[Participant],
    settings: BenchSettings,
    phases: Phases,
) -> dict[str, float]:
    """Paced one-envelope sends; -> send-start to WebSocket-arrival latency in milliseconds.

    The first `warmup` seconds of the same pacing are not counted: the senders' connections
    are opened and the relay's caches filled then (the first second's p99 is about a second).
    """
    total = max(1, round(settings.rate * settings.latency_duration))
    warm = round(settings.rate * settings.warmup)
    task = phases.add("latency", total)
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    measured_from = math.inf  # sends before this moment warm up connections and caches

    def arrived(message_id: bytes, at: float) -> None:
        start = sent_at.pop(message_id, None)
        if start is not None and start >= measured_from:
            latencies.append(at - start)

    async with _session() as session, receivers(session, urls, recipients, arrived):
        factories = [
            EnvelopeFactory(s.name, recipients[i % len(recipients)].name)
            for i, s in enumerate(senders)
        ]
        in_flight: set[asyncio.Task[int]] = set()
        failures: list[BaseException] = []
        late = 0.0

        def done(finished: asyncio.Task[int]) -> None:
            in_flight.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                failures.append(finished.exception())  # type: ignore[arg-type]

        async def send_one(index: int, message_id: bytes, body: bytes) -> int:
            sent_at[message_id] = time.perf_counter()
            return await post_envelopes(session, urls[index % len(urls)], senders[index], body)

        def show() -> None:
            status = f"{len(latencies):,} delivered"
            if latencies:
                status += f", p50 so far {statistics.median(latencies[-2000:]) * 1000:.1f} ms"
            phases.update(task, len(latencies), status)

        with ticking(show):
            started = time.perf_counter()
            measured_from = started + warm / settings.rate
            for k in range(warm + total):
                due = started + k / settings.rate
                now = time.perf_counter()
                if due > now:
                    await asyncio.sleep(due - now)
                else:
                    late = max(late, now - due)
                index = k % len(senders)
                ids, body = factories[index].request_body(1)
                job = asyncio.create_task(send_one(index, ids[0], body))
                in_flight.add(job)
                job.add_done_callback(done)
            paced_for = time.perf_counter() - measured_from
            deadline = time.perf_counter() + settings.drain_timeout
            while (in_flight or sent_at) and time.perf_counter() < deadline and not failures:
                await asyncio.sleep(0.01)
        if failures:
            raise failures[0]
        if not latencies:
            raise RuntimeError("no envelope arrived during the latency phase")
        return {
            "rate_per_s": settings.rate,
            "achieved_rate_per_s": total / paced_for,
            "samples": float(len(latencies)),
            "lost": float(len(sent_at)),
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p90_ms": percentile(latencies, 0.90) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": max(latencies) * 1000,
            "client_max_lag_ms": late * 1000,
        }


# --- phase (c): mailbox fetch cost -------------------------------------------------------------


async def _fill(
    session: aiohttp.ClientSession,
    url: str,
    sender: Participant,
    targets: Sequence[Participant],
    count: int,
    on_progress: Callable[[int], None],
    expires_in: int = FILL_EXPIRY,
) -> None:
    """Queue `count` envelopes spread over `targets` (about evenly), 256 per request."""
    factories = [EnvelopeFactory(sender.name, t.name, expires_in) for t in targets]
    per_target = [count // len(targets) + (i < count % len(targets)) for i in range(len(targets))]
    gate = asyncio.Semaphore(8)

    async def one(factory: EnvelopeFactory, n: int) -> None:
        async with gate:
            _, body = factory.request_body(n)
            on_progress(await post_envelopes(session, url, sender, body))

    jobs = []
    for factory, n in zip(factories, per_target, strict=True):
        while n > 0:
            jobs.append(one(factory, min(256, n)))
            n -= min(256, n)
    await asyncio.gather(*jobs)


async def _time_fetches(
    session: aiohttp.ClientSession, url: str, who: Participant, repeats: int
) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        async with session.get(
            url + "/v1/messages", params={"limit": "100"}, headers=who.headers
        ) as response:
            answer = await _checked(response)
        times.append(time.perf_counter() - started)
        if len(answer["envelopes"]) != 100:
            raise RuntimeError(f"the probe mailbox held {len(answer['envelopes'])}, not 100")
    return times


async def fetch_phase(
    url: str,
    sender: Participant,
    probe: Participant,
    fillers: Sequence[Participant],
    settings: BenchSettings,
    phases: Phases,
) -> dict[str, float]:
    """GET /v1/messages?limit=100 (100 queued) with ~1k, then ~`fill`, envelopes elsewhere."""
    small = min(1_000, settings.fill)
    task = phases.add("fetch", 100 + settings.fill + 2 * settings.fetch_repeats)
    done = 0

    def progressed(n: int) -> None:
        nonlocal done
        done += n
        phases.update(task, done, f"{done - 100:,} queued elsewhere")

    async with _session() as session:
        await _fill(session, url, sender, [probe], 100, progressed)
        await _fill(session, url, sender, fillers, small, progressed)
        await _time_fetches(session, url, probe, 10)  # warm caches
        few = await _time_fetches(session, url, probe, settings.fetch_repeats)
        progressed(settings.fetch_repeats)
        await _fill(session, url, sender, fillers, settings.fill - small, progressed)
        await _time_fetches(session, url, probe, 10)
        many = await _time_fetches(session, url, probe, settings.fetch_repeats)
        progressed(settings.fetch_repeats)
    return {
        "small_store_envelopes": float(small),
        "small_p50_ms": statistics.median(few) * 1000,
        "small_p99_ms": percentile(few, 0.99) * 1000,
        "large_store_envelopes": float(settings.fill),
        "large_p50_ms": statistics.median(many) * 1000,
        "large_p99_ms": percentile(many, 0.99) * 1000,
        "growth_p50": statistics.median(many) / statistics.median(few),
    }


# --- phase (d): the ceiling, a bare aiohttp forwarder ------------------------------------------


def forwarder_app() -> web.Application:
    """`/send/{k}` copies every frame to the socket open at `/recv/{k}`. Nothing else."""
    sinks: dict[str, web.WebSocketResponse] = {}
    ready: dict[str, asyncio.Event] = {}

    def ready_event(key: str) -> asyncio.Event:
        return ready.setdefault(key, asyncio.Event())

    async def receive(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        key = request.match_info["key"]
        sinks[key] = ws
        ready_event(key).set()
        async for _ in ws:
            pass
        return ws

    async def send(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        key = request.match_info["key"]
        await ready_event(key).wait()
        sink = sinks[key]
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
        return ws

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/recv/{key}", receive)
    app.router.add_get("/send/{key}", send)
    app.router.add_get("/healthz", health)
    return app


def serve_forwarder(port: int) -> None:
    web.run_app(forwarder_app(), host="127.0.0.1", port=port, print=None, access_log=None)


@contextlib.asynccontextmanager
async def started_forwarder() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="backchannel-bench-fwd-") as tmp:
        port = free_port()
        process = Subprocess(
            [sys.executable, "-m", "backchannel_relay.bench", "forwarder", str(port)], Path(tmp)
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(url, process)
            yield url
        finally:
            process.stop()


async def ceiling_phase(url: str, settings: BenchSettings, phases: Phases) -> dict[str, float]:
    """Each of `senders` sockets streams relay-sized push frames to its receiver."""
    task = phases.add("ceiling", settings.warmup + settings.duration)
    factory = EnvelopeFactory("bench-sender", "bench-recipient")
    frames = [
        json.dumps(
            {
                "type": "envelope",
                "id": n + 1,
                "received_at": int(time.time() * 1000),
                "envelope": b64(factory.make()[1]),
            }
        )
        for n in range(64)
    ]
    received = 0
    stop = False

    async with _session() as session:
        sinks = [
            await session.ws_connect(f"{url}/recv/{k}", max_msg_size=4 * 1024 * 1024)
            for k in range(settings.senders)
        ]
        sources = [await session.ws_connect(f"{url}/send/{k}") for k in range(settings.senders)]

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal received
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(message.data)
                message_id_of(base64.b64decode(frame["envelope"]))
                received += 1

        async def pump(ws: aiohttp.ClientWebSocketResponse) -> None:
            n = 0
            while not stop:
                await ws.send_str(frames[n % len(frames)])
                n += 1
                if n % 64 == 0:
                    await asyncio.sleep(0)  # let the other sockets have a turn

        readers = [asyncio.create_task(drain(ws)) for ws in sinks]
        writers = [asyncio.create_task(pump(ws)) for ws in sources]
        started = time.perf_counter()
        status = ""

        def show() -> None:
            elapsed = min(time.perf_counter() - started, settings.warmup + settings.duration)
            phases.update(task, elapsed, status)

        try:
            with ticking(show):
                await asyncio.sleep(settings.warmup)
                r0, t0 = received, time.perf_counter()
                window_end = t0 + settings.duration
                while (now := time.perf_counter()) < window_end:
                    await asyncio.sleep(min(0.5, window_end - now))
                    status = f"{(received - r0) / (time.perf_counter() - t0):,.0f} frames/s"
                r1, t1 = received, time.perf_counter()
        finally:
            stop = True
            for job in writers + readers:
                job.cancel()
            await asyncio.gather(*writers, *readers, return_exceptions=True)
            for ws in sources + sinks:
                await ws.close()
    return {"frames_per_s": (r1 - r0) / (t1 - t0), "window_s": t1 - t0}


# --- the whole run -----------------------------------------------------------------------------


async def run_bench(
    settings: BenchSettings,
    relay_urls: Sequence[str] = (),
    admin_token: str | None = None,
    database_url: str | None = None,
    console: Console | None = None,
    processes: int = 1,
) -> Report:
    """Drive the relays at `relay_urls` (running ones sharing one store), or start `processes`
    relays on `database_url` (several only on PostgreSQL) and drive those."""
    async with contextlib.AsyncExitStack() as stack:
        handles: list[RelayHandle] = []
        if not relay_urls:
            if processes > 1 and not (database_url or "").startswith("postgresql"):
                raise RuntimeError("several relay processes share a PostgreSQL --database")
            for _ in range(processes):
                handles.append(await stack.enter_async_context(started_relay(database_url)))
        for url in relay_urls:
            await wait_healthy(url.rstrip("/"), None, timeout=5)
            handles.append(RelayHandle(url.rstrip("/"), None, "an existing relay"))
        urls = [h.url for h in handles]
        token = admin_token or next((h.admin_token for h in handles if h.admin_token), None)
        if token is None:
            raise RuntimeError(
                "no admin token: give --admin-token (it is printed on a store's first start)"
            )
        store = handles[0].store + (f", {len(handles)} relay processes" if len(handles) > 1 else "")
        report = Report(
            relay=", ".join(urls),
            store=store,
            machine=machine_description(),
            settings=asdict(settings),
        )
        run = os.urandom(3).hex()
        names = [f"bench-{run}-s{i:04d}" for i in range(settings.senders)]
        names += [f"bench-{run}-r{i:04d}" for i in range(settings.recipient_count)]
        fillers = max(1, math.ceil(settings.fill / FILL_PER_MAILBOX))
        if "fetch" in settings.phases:
            names += [f"bench-{run}-p0000"] + [f"bench-{run}-f{i:04d}" for i in range(fillers)]
        holders = math.ceil(settings.idle_connections / WEBSOCKETS_PER_PARTICIPANT)
        if "idle" in settings.phases:
            names += [f"bench-{run}-i{i:04d}" for i in range(holders)]
        with Phases(console) as phases:
            task = phases.add("register", len(names))
            async with _session() as session:
                everyone = await register_all(session, urls[0], token, names)
            phases.update(task, len(names), f"{len(names)} participants")
            senders = everyone[: settings.senders]
            recipients = everyone[settings.senders : settings.senders + settings.recipient_count]
            rest = everyone[settings.senders + settings.recipient_count :]
            idle_holders = rest[len(rest) - holders :] if "idle" in settings.phases else []
            if "throughput" in settings.phases:
                report.throughput = await throughput_phase(
                    urls, senders, recipients, settings, phases
                )
            if "latency" in settings.phases:
                report.latency = await latency_phase(urls, senders, recipients, settings, phases)
            if "fetch" in settings.phases:
                report.fetch = await fetch_phase(
                    urls[0], senders[0], rest[0], rest[1:], settings, phases
                )
            if "idle" in settings.phases:
                process = handles[0].process
                report.idle = await idle_phase(
                    urls[0], idle_holders, settings.idle_connections,
                    process.process.pid if process else None, phases,
                )  # fmt: skip
            if "ceiling" in settings.phases:
                await stack.aclose()  # the relays stop: the forwarder gets the machine to itself
                async with started_forwarder() as forwarder:
                    report.ceiling = await ceiling_phase(forwarder, settings, phases)
        return report


# --- phase (e): idle connections ----------------------------------------------------------------


def resident_mib(pid: int) -> float:
    """The process's resident set size (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def idle_phase(
    url: str,
    holders: Sequence[Participant],
    count: int,
    pid: int | None,
    phases: Phases,
) -> dict[str, float]:
    """Open `count` WebSockets (at most 8 per participant, the relay's cap) and hold them
    idle; -> the relay's resident memory before and with them open (when it was started here)."""
    task = phases.add("idle", count)
    before = resident_mib(pid) if pid else math.nan
    opened: list[aiohttp.ClientWebSocketResponse] = []
    gate = asyncio.Semaphore(64)
    async with _session() as session:

        async def connect(who: Participant) -> None:
            async with gate:
                opened.append(await session.ws_connect(url + "/v1/ws", headers=who.headers,
                                                       heartbeat=None))  # fmt: skip
                phases.update(task, len(opened), f"{len(opened):,} open")

        started = time.perf_counter()
        try:
            await asyncio.gather(*(connect(holders[i // WEBSOCKETS_PER_PARTICIPANT])
                                   for i in range(count)))  # fmt: skip
            opened_in = time.perf_counter() - started
            await asyncio.sleep(3)  # every socket has read its (empty) mailbox and waits
            during = resident_mib(pid) if pid else math.nan
            async with session.get(url + "/healthz") as response:
                healthy = response.status == 200
        finally:
            await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return {
        "connections": float(len(opened)),
        "opened_in_s": opened_in,
        "rss_before_mib": before,
        "rss_with_connections_mib": during,
        "per_connection_kib": (during - before) * 1024 / max(1, len(opened)),
        "healthy_while_held": float(healthy),
    }


# --- the report --------------------------------------------------------------------------------

GOALS = {
    "throughput": 10_000.0,
    "latency_p99_ms": 25.0,
    "idle_rss_mib": 500.0,
}


def report_table(report: Report) -> Table:
    table = Table(title="backchannel-relay bench", title_justify="left")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_column("goal", justify="right")
    s = report.settings
    t, lat, f, c = report.throughput, report.latency, report.fetch, report.ceiling
    if t:
        table.add_row(
            f"accepted envelopes/s ({s['senders']} senders, batches of {s['batch']}, "
            f"{CIPHERTEXT_BYTES} B)",
            f"{t['accepted_per_s']:,.0f}",
            f">= {GOALS['throughput']:,.0f}",
        )
        table.add_row("  delivered over WebSockets /s, same window", f"{t['delivered_per_s']:,.0f}")
        table.add_row("  send requests/s", f"{t['requests_per_s']:,.0f}")
        table.add_row("  backlog at the window's end (envelopes)", f"{t['backlog_at_end']:,.0f}")
    if lat:
        table.add_row(
            f"delivery latency p50 at {lat['rate_per_s']:,.0f} envelopes/s (ms)",
            f"{lat['p50_ms']:.1f}",
            "",
        )
        table.add_row("  p90 (ms)", f"{lat['p90_ms']:.1f}", "")
        table.add_row("  p99 (ms)", f"{lat['p99_ms']:.1f}", f"<= {GOALS['latency_p99_ms']:.0f}")
        table.add_row("  max (ms)", f"{lat['max_ms']:.1f}", "")
        table.add_row("  achieved send rate /s", f"{lat['achieved_rate_per_s']:,.0f}", "")
    if f:
        table.add_row(
            f"mailbox fetch of 100, {f['small_store_envelopes']:,.0f} stored elsewhere, "
            "p50 / p99 (ms)",
            f"{f['small_p50_ms']:.2f} / {f['small_p99_ms']:.2f}",
            "",
        )
        table.add_row(
            f"mailbox fetch of 100, {f['large_store_envelopes']:,.0f} stored elsewhere, "
            "p50 / p99 (ms)",
            f"{f['large_p50_ms']:.2f} / {f['large_p99_ms']:.2f}",
            "",
        )
        table.add_row("  growth (p50 large / p50 small)", f"{f['growth_p50']:.2f}x", "~1x")
    if c:
        table.add_row(
            f"ceiling: bare aiohttp WebSocket forwarder, frames/s ({s['senders']} pairs)",
            f"{c['frames_per_s']:,.0f}",
            "",
        )
        if t:
            table.add_row(
                "  relay accepted / ceiling",
                f"{t['accepted_per_s'] / c['frames_per_s']:.0%}",
                "",
            )
    idle = report.idle
    if idle:
        table.add_row(
            f"idle WebSockets held by one relay process: {idle['connections']:,.0f}, "
            "resident memory (MiB)",
            f"{idle['rss_with_connections_mib']:,.0f}",
            f"< {GOALS['idle_rss_mib']:,.0f}",
        )
        table.add_row("  before they opened (MiB)", f"{idle['rss_before_mib']:,.0f}", "")
        table.add_row("  per connection (KiB)", f"{idle['per_connection_kib']:,.1f}", "")
    table.caption = f"{report.machine}; store: {report.store}"
    return table


def _forwarder_main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] != "forwarder":
        raise SystemExit("usage: python -m backchannel_relay.bench forwarder PORT")
    serve_forwarder(int(argv[1]))


if __name__ == "__main__":
    _forwarder_main(sys.argv[1:])
