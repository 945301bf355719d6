"""Cold-start latency of the participant CLI: `python -m backchannel_cli.bench [--runs N] [--json]`.

Each run is a new process, as a user starts it: `backchannel --help`, and `backchannel send` of a
short letter to a participant with whom a session already exists (unencrypted keystore), timed
from process start to exit; `send` exits only after the relay's receipt. The relay is a real
subprocess on a free port with a temporary SQLite store, and the two participants are created
and registered through the CLI itself. Figures go to BENCHMARKS.md; no test asserts them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOALS_MS = {"help": 150.0, "send": 350.0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli() -> list[str]:
    """The installed console script, as a user runs it."""
    script = shutil.which("backchannel", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "backchannel_cli"]


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} ... failed: {done.stderr.strip()}")
    return done.stdout


def _timed(argv: list[str], runs: int) -> list[float]:
    """Milliseconds from process start to exit, per run (one untimed run first)."""
    _run(argv)
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        _run(argv)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _summary(samples: list[float], goal: float) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "runs": float(len(ordered)),
        "p50_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))],
        "min_ms": ordered[0],
        "goal_ms": goal,
    }


def measure(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="backchannel-clibench-") as tmp:
        home, data = Path(tmp) / "home", Path(tmp) / "relay"
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        relay_cmd = [sys.executable, "-m", "backchannel_relay"]
        log = (Path(tmp) / "relay.log").open("wb")
        relay = subprocess.Popen(
            [*relay_cmd, "serve", "--port", str(port), "--data-dir", str(data), "--no-access-log",
             "--rate-burst", "100000", "--rate-per-second", "100000",
             "--public-rate-burst", "100000"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or relay.poll() is not None:
                        raise SystemExit("the relay did not start") from None
                    time.sleep(0.05)
            cli = [*_cli(), "--home", str(home)]
            for name in ("alice", "bob"):
                _run([*cli, "--profile", name, "init", name, "--relay", url, "--no-passphrase"])
                invite_cmd = [*relay_cmd, "invite", name, "--role", "party", "--json"]
                invite = json.loads(_run([*invite_cmd, "--data-dir", str(data)]))["invite"]
                _run([*cli, "--profile", name, "register", invite])
            send = [*cli, "--profile", "alice", "send", "bob", "Cold start, warm session."]
            _run(send)  # the handshake happens here; the timed sends reuse the session
            _run([*cli, "--profile", "bob", "inbox"])
            results = {
                "help": _summary(_timed([*_cli(), "--help"], runs), GOALS_MS["help"]),
                "send": _summary(_timed(send, runs), GOALS_MS["send"]),
            }
        finally:
            relay.terminate()
            relay.wait(timeout=15)
            log.close()
    return {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        **results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per command")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    report = measure(args.runs)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"backchannel CLI cold start ({report['machine']})")
    for command in ("help", "send"):
        row = report[command]
        verdict = "meets" if row["p50_ms"] <= row["goal_ms"] else "misses"
        print(
            f"  {command:<5} p50 {row['p50_ms']:6.0f} ms  p90 {row['p90_ms']:6.0f} ms  "
            f"min {row['min_ms']:6.0f} ms  ({int(row['runs'])} runs; goal <= "
            f"{row['goal_ms']:.0f} ms: {verdict})"
        )


if __name__ == "__main__":
    main()
