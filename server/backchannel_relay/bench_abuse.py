"""`backchannel-relay bench --phase abuse`: a legitimate participant's latency under attack.

The relay runs with its default limits (the other phases lift them), as a relay in a room does.
A pool of legitimate participants takes turns to fetch their own mailbox (`GET /v1/messages`)
and to send one envelope to each other (`POST /v1/messages`), paced, first with nothing else
running (quiet) and then during each of three attacks:

- **bogus**: `bogus_requests` unauthenticated requests from many connections at once: drop
  sends with random tokens and broken envelopes, login challenges for made-up names, and
  registrations with unknown invites.
- **slow uploads**: `slow_uploads` connections each announcing an 8 MiB body and trickling it.
- **flood**: a correspondent sends batches of the largest size, as fast as the relay answers, to
  one of the legitimate participants, who keeps fetching and receiving letters from the others.

For each: the p50 and p99 of fetch and send, the ratio of the attack's p50 to the quiet one,
and how many legitimate requests were refused; and the relay's peak resident memory (VmHWM).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .bench import (
    EnvelopeFactory,
    Participant,
    Subprocess,
    admin_token_from,
    b64,
    free_port,
    percentile,
    register_all,
    wait_healthy,
)

SLOW_BODY_BYTES = 8 * 1024 * 1024
SLOW_CHUNK = 16 * 1024
FLOOD_BATCH = 256
VICTIMS = 1
GOALS = {"p50_ratio": 2.0, "peak_rss_mib": 300.0}


@dataclass(frozen=True, slots=True)
class AbuseSettings:
    samples: int = 60
    """Fetches and sends timed per condition (each)."""
    pace: float = 20.0
    """Legitimate requests per second, of each kind."""
    legitimate: int = 16
    bogus_requests: int = 10_000
    bogus_concurrency: int = 64
    slow_uploads: int = 200
    slow_hold: float = 10.0
    """Seconds the slow uploads keep trickling (the relay's read timeout should cut them first)."""


def peak_rss_mib(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of a process, in MiB (Linux /proc)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


@contextlib.asynccontextmanager
async def defended_relay(database_url: str | None) -> AsyncIterator[tuple[str, str, Subprocess]]:
    """A relay subprocess with every default limit in force; -> (url, admin token, process)."""
    with tempfile.TemporaryDirectory(prefix="backchannel-abuse-") as tmp:
        port = free_port()
        argv = [sys.executable, "-m", "backchannel_relay", "serve", "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log"]  # fmt: skip
        if database_url is None:
            argv += ["--data-dir", str(Path(tmp) / "data")]
        else:
            argv += ["--database", database_url]
        process = Subprocess(argv, Path(tmp))
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(url, process)
            token = admin_token_from(process.output())
            if token is None:
                raise RuntimeError("the relay printed no admin token")
            yield url, token, process
        finally:
            process.stop()


class Legitimate:
    """The pool of well-behaved participants and their timed requests."""

    def __init__(self, session: aiohttp.ClientSession, url: str, pool: Sequence[Participant]):
        self.session = session
        self.url = url
        self.pool = pool
        self.turn = 0

    async def _timed(self, call: Callable[[], Awaitable[int]]) -> tuple[float, int]:
        """-> (milliseconds, HTTP status; 0 when the connection failed)."""
        started = time.perf_counter()
        try:
            status = await call()
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        return (time.perf_counter() - started) * 1000, status

    async def fetch(self, who: Participant) -> int:
        async with self.session.get(
            self.url + "/v1/messages?limit=100", headers=who.headers
        ) as response:
            await response.read()
            return response.status

    async def send(self, who: Participant, to: Participant) -> int:
        _, envelope = EnvelopeFactory(who.name, to.name).make()
        async with self.session.post(
            self.url + "/v1/messages", json={"envelopes": [b64(envelope)]}, headers=who.headers
        ) as response:
            await response.read()
            return response.status

    async def measure(self, samples: int, pace: float) -> dict[str, float]:
        """`samples` fetches and as many sends, paced; -> p50, p99 and refusals of each."""
        fetches: list[float] = []
        sends: list[float] = []
        refused: dict[str, float] = {"fetch_refused": 0.0, "send_refused": 0.0}

        async def one(index: int) -> None:
            me = self.pool[index % len(self.pool)]
            to = self.pool[(index + 1) % len(self.pool)]
            for kind, call, into in (
                ("fetch", lambda: self.fetch(me), fetches),
                ("send", lambda: self.send(me, to), sends),
            ):
                took, status = await self._timed(call)
                into.append(took)
                if not 200 <= status < 400:
                    refused[f"{kind}_refused"] += 1
                    key = f"{kind}_refused_{status}"
                    refused[key] = refused.get(key, 0.0) + 1

        started = time.perf_counter()
        tasks = []
        for index in range(samples):
            self.turn += 1
            tasks.append(asyncio.create_task(one(self.turn)))
            await asyncio.sleep(max(0.0, started + (index + 1) / pace - time.perf_counter()))
        await asyncio.gather(*tasks)
        return {
            "fetch_p50_ms": percentile(fetches, 0.5),
            "fetch_p99_ms": percentile(fetches, 0.99),
            "send_p50_ms": percentile(sends, 0.5),
            "send_p99_ms": percentile(sends, 0.99),
            **refused,
        }


# --- the attacks ---------------------------------------------------------------------------------


async def bogus_requests(url: str, count: int, concurrency: int) -> dict[str, float]:
    """Unauthenticated junk from `concurrency` connections; -> how the relay answered."""
    statuses: dict[int, int] = {}
    left = count
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                kind = left % 3
                if kind == 0:
                    path = "/v1/drops/send"
                    body = {"token": b64(os.urandom(32)), "envelope": b64(os.urandom(64))}
                elif kind == 1:
                    path = "/v1/auth/challenge"
                    body = {"name": f"nobody-{os.urandom(6).hex()}"}
                else:
                    path = "/v1/register"
                    body = {"invite": os.urandom(12).hex(), "name": f"x{os.urandom(4).hex()}"}
                try:
                    async with session.post(url + path, json=body) as response:
                        await response.read()
                        statuses[response.status] = statuses.get(response.status, 0) + 1
                except (aiohttp.ClientError, TimeoutError):
                    statuses[0] = statuses.get(0, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {f"bogus_status_{status}": float(n) for status, n in sorted(statuses.items())}


async def slow_upload(url: str, path: str, hold: float) -> bool:
    """Announce an 8 MiB body and trickle it; -> whether the relay cut the connection first."""
    host, port = url.removeprefix("http://").split(":")
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return True
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {SLOW_BODY_BYTES}\r\n\r\n"
    )
    sent = 0
    deadline = time.monotonic() + hold
    try:
        writer.write(head.encode())
        chunk = b'{"envelope": "' + b"A" * SLOW_CHUNK
        while time.monotonic() < deadline and sent < SLOW_BODY_BYTES:
            writer.write(chunk if sent == 0 else b"A" * SLOW_CHUNK)
            await writer.drain()
            sent += SLOW_CHUNK
            if reader.at_eof():
                return True
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 0.1):
                    return True  # the relay answered (413 or 408) before the body was done
        return False
    except (ConnectionError, OSError):
        return True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def slow_uploads(url: str, count: int, hold: float) -> dict[str, float]:
    paths = ("/v1/drops/send", "/v1/register", "/v1/auth/challenge")
    cut = await asyncio.gather(*(slow_upload(url, paths[i % len(paths)], hold)
                                 for i in range(count)))  # fmt: skip
    return {"slow_uploads_cut": float(sum(cut)), "slow_uploads": float(count)}


async def flood(
    session: aiohttp.ClientSession, url: str, flooder: Participant,
    victims: Sequence[Participant], stop: asyncio.Event,
) -> dict[str, float]:  # fmt: skip
    """Batches of the largest size to the victims until told to stop, ignoring refusals except
    for honouring nothing: an attacker does not back off."""
    accepted = refused = requests = 0
    factories = [EnvelopeFactory(flooder.name, v.name) for v in victims]
    while not stop.is_set():
        _, body = factories[requests % len(factories)].request_body(FLOOD_BATCH)
        requests += 1
        async with session.post(
            url + "/v1/messages", data=body,
            headers={**flooder.headers, "Content-Type": "application/json"},
        ) as response:  # fmt: skip
            answer = await response.read()
        if response.status < 400:
            accepted += len(json.loads(answer)["receipts"])
        else:
            refused += FLOOD_BATCH
        await asyncio.sleep(0)
    return {"flood_requests": float(requests), "flood_accepted": float(accepted),
            "flood_refused": float(refused)}  # fmt: skip


# --- the phase -----------------------------------------------------------------------------------


async def abuse_phase(database_url: str | None, settings: AbuseSettings) -> dict[str, float]:
    result: dict[str, float] = {}
    async with defended_relay(database_url) as (url, admin_token, process):
        pid = process.process.pid
        run = os.urandom(3).hex()
        names = [f"abuse-{run}-l{i:02d}" for i in range(settings.legitimate)]
        names.append(f"abuse-{run}-flooder")
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            everyone = await register_all(session, url, admin_token, names)
            pool, flooder = everyone[:-1], everyone[-1]
            legit = Legitimate(session, url, pool)
            await legit.measure(settings.samples, settings.pace)  # warm-up: connections, caches
            quiet = await legit.measure(settings.samples, settings.pace)
            result.update({f"quiet_{k}": v for k, v in quiet.items()})
            result["rss_quiet_mib"] = peak_rss_mib(pid)[0]

            async def during(name: str, attack: Awaitable[dict[str, float]]) -> None:
                running = asyncio.ensure_future(attack)
                await asyncio.sleep(0.5)  # the attack is under way
                figures = await legit.measure(settings.samples, settings.pace)
                result.update(await running)
                result.update({f"{name}_{k}": v for k, v in figures.items()})
                for kind in ("fetch", "send"):
                    quiet_p50 = result[f"quiet_{kind}_p50_ms"]
                    result[f"{name}_{kind}_p50_ratio"] = figures[f"{kind}_p50_ms"] / quiet_p50
                result[f"rss_after_{name}_mib"] = peak_rss_mib(pid)[0]

            await during("bogus", bogus_requests(url, settings.bogus_requests,
                                                 settings.bogus_concurrency))  # fmt: skip
            await during("slow", slow_uploads(url, settings.slow_uploads, settings.slow_hold))
            stop = asyncio.Event()

            async def flood_for_a_while() -> dict[str, float]:
                task = asyncio.ensure_future(flood(session, url, flooder, pool[:VICTIMS], stop))
                await asyncio.sleep(settings.samples / settings.pace + 1)
                stop.set()
                return await task

            await during("flood", flood_for_a_while())
        result["peak_rss_mib"] = peak_rss_mib(pid)[1]
    worst = max(result[f"{n}_{k}_p50_ratio"] for n in ("bogus", "slow", "flood")
                for k in ("fetch", "send"))  # fmt: skip
    result["worst_p50_ratio"] = worst
    result["goal_met"] = float(
        worst <= GOALS["p50_ratio"] and result["peak_rss_mib"] < GOALS["peak_rss_mib"]
        and not any(v for k, v in result.items() if k.endswith("_refused")
                    and not k.startswith("flood"))
    )  # fmt: skip
    return result


def abuse_rows(figures: dict[str, float]) -> list[tuple[str, str, str]]:
    """The report table's rows: (measure, figure, goal)."""
    rows = [
        (
            "abuse: legitimate fetch / send p50, quiet (ms)",
            f"{figures['quiet_fetch_p50_ms']:.1f} / {figures['quiet_send_p50_ms']:.1f}",
            "",
        )
    ]
    labels = {
        "bogus": "during bogus unauthenticated requests",
        "slow": "during slow 8 MiB uploads",
        "flood": "during a mailbox flood",
    }
    for name, label in labels.items():
        ratios = (figures[f"{name}_fetch_p50_ratio"], figures[f"{name}_send_p50_ratio"])
        refused = figures[f"{name}_fetch_refused"] + figures[f"{name}_send_refused"]
        rows.append(
            (
                f"  {label}: fetch / send p50 (ms)",
                f"{figures[f'{name}_fetch_p50_ms']:.1f} / {figures[f'{name}_send_p50_ms']:.1f}",
                f"<= {GOALS['p50_ratio']:.0f}x quiet",
            )
        )
        rows.append(
            (
                "    ratio to quiet; legitimate requests refused",
                f"{ratios[0]:.2f}x / {ratios[1]:.2f}x; {refused:.0f}",
                "0 refused",
            )
        )
    rows.append(("  relay peak resident memory (MiB)", f"{figures['peak_rss_mib']:.0f}",
                 f"< {GOALS['peak_rss_mib']:.0f}"))  # fmt: skip
    return rows


def scaled(fraction: float) -> AbuseSettings:
    """The full-size settings, every count multiplied by `fraction` (at least a few each): the
    smoke test runs every path at 0.01 and measures nothing."""
    full = AbuseSettings()

    def part(count: int, least: int) -> int:
        return max(least, round(count * fraction))

    return AbuseSettings(
        samples=part(full.samples, 4), pace=full.pace, legitimate=part(full.legitimate, 4),
        bogus_requests=part(full.bogus_requests, 30),
        bogus_concurrency=part(full.bogus_concurrency, 4),
        slow_uploads=part(full.slow_uploads, 3),
        slow_hold=max(2.0, full.slow_hold * fraction),
    )  # fmt: skip
