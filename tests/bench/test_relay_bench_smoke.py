"""`backchannel-relay bench` runs end to end on a tiny load and reports every figure.

No speed is asserted (figures live in BENCHMARKS.md): this checks that each phase measured
something real (envelopes accepted and delivered, none lost, latencies and fetch times present,
the forwarder ceiling measured) so the benchmark cannot quietly break.
"""

from __future__ import annotations

import json
import subprocess
import sys


def test_relay_bench_reports_every_phase() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backchannel_relay", "bench", "--senders", "3", "--duration",
         "0.5", "--warmup", "0.2", "--latency-duration", "0.5", "--rate", "50", "--fill",
         "1000", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
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
