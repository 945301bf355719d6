"""`backchannel-relay bench` runs end to end on a tiny load and reports every figure.

No speed is asserted (figures live in BENCHMARKS.md): this checks that each phase measured
something real (envelopes accepted and delivered, none lost, latencies and fetch times present,
the forwarder ceiling measured) so the benchmark cannot quietly break.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay.conftest import _postgres


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`backchannel-relay bench ARGS` in a process of its own."""
    command = [sys.executable, "-m", "backchannel_relay", "bench", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_relay_bench_reports_every_phase() -> None:
    done = bench(
        "--senders", "3", "--duration", "0.5", "--warmup", "0.2", "--latency-duration", "0.5",
        "--rate", "50", "--fill", "1000", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    throughput, latency = report["throughput"], report["latency"]
    assert throughput["accepted_in_window"] > 0 and throughput["undelivered"] == 0
    assert latency["samples"] == 25 and latency["lost"] == 0
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    fetch = report["fetch"]
    assert fetch["small_p50_ms"] > 0 and fetch["large_p50_ms"] > 0
    assert fetch["large_store_envelopes"] >= fetch["small_store_envelopes"]
    assert report["ceiling"]["frames_per_s"] > 0
    assert "SQLite" in report["store"]


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    for backend in _postgres(tmp_path):
        yield backend.store_args[1]


def test_relay_bench_drives_two_processes_on_postgresql_and_holds_idle_sockets(
    postgres_url: str,
) -> None:
    done = bench(
        "--database", postgres_url, "--processes", "2", "--senders", "4", "--duration", "0.5",
        "--warmup", "0.2", "--latency-duration", "0.5", "--rate", "40", "--phase", "throughput",
        "--phase", "latency", "--phase", "idle", "--idle-connections", "40", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["relay"].count("http://") == 2 and "2 relay processes" in report["store"]
    assert report["throughput"]["accepted_in_window"] > 0
    assert report["throughput"]["undelivered"] == 0
    assert report["latency"]["samples"] == 20 and report["latency"]["lost"] == 0
    idle = report["idle"]
    assert idle["connections"] == 40 and idle["healthy_while_held"] == 1
    assert idle["rss_with_connections_mib"] > 0


def test_abuse_phase_attacks_a_defended_relay_and_reports_every_figure() -> None:
    done = bench("--phase", "abuse", "--abuse-scale", "0.01", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    abuse = json.loads(done.stdout)["abuse"]
    for attack in ("quiet", "bogus", "slow", "flood"):
        for kind in ("fetch", "send"):
            assert 0 < abuse[f"{attack}_{kind}_p50_ms"] <= abuse[f"{attack}_{kind}_p99_ms"]
            assert abuse[f"{attack}_{kind}_refused"] == 0, (attack, kind)
    assert sum(v for k, v in abuse.items() if k.startswith("bogus_status_")) == 100
    assert abuse["slow_uploads_cut"] == abuse["slow_uploads"] == 3
    assert abuse["flood_requests"] > 0 and abuse["flood_refused"] > 0
    assert abuse["peak_rss_mib"] >= abuse["rss_quiet_mib"] > 0


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--processes", "2"], "share a PostgreSQL --database"),
        (["--relays", "relay1:8470"], "'relay1:8470' is not an http:// or https:// URL"),
        (["--relays", " , "], "name at least one relay URL"),
        (["--phase", "abuse", "--relays", "http://a:1"], "starts a relay of its own"),
    ],
)
def test_bad_bench_flags_get_one_clear_line(args: list[str], why: str) -> None:
    done = bench(*args, timeout=60)
    assert done.returncode != 0 and why in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
