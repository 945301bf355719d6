"""Cold-start latency of the participant CLI: `python -m backchannel_cli.bench [--runs N] [--json]`.

Each run is a new process, as a user starts it: `backchannel --help`, then `send` (a short letter
to a participant with whom a session already exists; it exits after the relay's receipt),
`inbox` (an empty mailbox: fetch, catch up, top up), `history` (the profile's correspondence,
from the local store), `show` (one letter, its status fetched first) and `tui` (from start to
its first screen drawn with what its commands said, headless, then exit), each once with an
unencrypted keystore, once with a passphrase (scrypt to unlock) and once with a passphrase
through the profile's agent (`_agent`: unlocked once, before the runs), timed from process start
to exit. The relay is a real subprocess on a free
port with a temporary SQLite store, and the participants are created and registered through the
CLI itself. Figures go to BENCHMARKS.md; no test asserts them.
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

GOALS_MS: dict[str, float | None] = {"help": 150.0, "send": 350.0}
"""p50 goals; the other commands are measured so that no change makes them slower unseen."""
COMMANDS = ("send", "inbox", "history", "show", "tui")
VARIANTS = ("", "_passphrase", "_agent")
AGENT_GOAL_MS = 150.0
PASSPHRASE = "a bench passphrase"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli() -> list[str]:
    """The installed console script, as a user runs it."""
    script = shutil.which("backchannel", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "backchannel_cli"]


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} ... failed: {done.stderr.strip()}")
    return done.stdout


def _timed(argv: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """Milliseconds from process start to exit, per run (one untimed run first)."""
    _run(argv, env)
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        _run(argv, env)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _summary(samples: list[float], goal: float | None) -> dict[str, float | None]:
    ordered = sorted(samples)
    return {
        "runs": float(len(ordered)),
        "p50_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))],
        "min_ms": ordered[0],
        "goal_ms": goal,
    }


def measure(runs: int, agent: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="backchannel-clibench-") as tmp:
        home, data = Path(tmp) / "home", Path(tmp) / "relay"
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        relay_cmd = [sys.executable, "-m", "backchannel_relay"]
        log = (Path(tmp) / "relay.log").open("wb")
        relay = subprocess.Popen(
            [*relay_cmd, "serve", "--port", str(port), "--data-dir", str(data), "--no-access-log",
             "--rate-burst", "100000", "--rate-per-second", "100000",
             "--send-burst", "100000", "--send-per-second", "100000",
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
            locked = {**os.environ, "BACKCHANNEL_PASSPHRASE": PASSPHRASE}
            for name, env in (("alice", None), ("carol", locked), ("bob", None)):
                key = ["--no-passphrase"] if env is None else []
                _run([*cli, "--profile", name, "init", name, "--relay", url, *key], env)
                invite_cmd = [*relay_cmd, "invite", name, "--role", "party", "--json"]
                invite = json.loads(_run([*invite_cmd, "--data-dir", str(data)]))["invite"]
                _run([*cli, "--profile", name, "register", invite], env)
            results: dict[str, Any] = {
                "help": _summary(_timed([*_cli(), "--help"], runs), GOALS_MS["help"])
            }
            plain = {**os.environ, "BACKCHANNEL_NO_AGENT": "1"}
            variants = [("alice", plain, ""), ("carol", {**locked, **plain}, "_passphrase")]
            if agent:
                variants.append(("carol", locked, "_agent"))
            for name, env, suffix in variants:
                me = [*cli, "--profile", name]
                if suffix == "_agent":
                    _run([*me, "agent", "start", "--idle-lock", "0"], locked)
                send = [*me, "send", "bob", "Cold start, warm session."]
                sent = json.loads(_run([*send, "--json"], env))["id"]  # (the handshake, once)
                _run([*cli, "--profile", "bob", "inbox"], plain)
                argvs = {"send": send, "inbox": [*me, "inbox"], "history": [*me, "history"],
                         "show": [*me, "show", sent],
                         "tui": [*me, "tui", "--first-screen",
                                 *(() if suffix == "_agent" else ("--no-agent",))]}  # fmt: skip
                for command in COMMANDS:
                    goal = GOALS_MS.get(command + suffix)
                    if suffix == "_agent" and command != "tui":
                        goal = AGENT_GOAL_MS
                    results[command + suffix] = _summary(_timed(argvs[command], runs, env), goal)
        finally:
            subprocess.run([*_cli(), "--home", str(home), "--profile", "carol", "agent", "stop"],
                           capture_output=True, timeout=30)  # fmt: skip
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
    parser.add_argument(
        "--without-agent", action="store_true",
        help="skip the agent's figures (to compare with a tree that has no agent)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    report = measure(args.runs, agent=not args.without_agent)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"backchannel CLI cold start ({report['machine']})")
    for command, row in report.items():
        if command == "machine":
            continue
        goal = row["goal_ms"]
        verdict = (
            "" if goal is None else
            f"; goal <= {goal:.0f} ms: {'meets' if row['p50_ms'] <= goal else 'misses'}"
        )  # fmt: skip
        print(
            f"  {command:<18} p50 {row['p50_ms']:6.0f} ms  p90 {row['p90_ms']:6.0f} ms  "
            f"min {row['min_ms']:6.0f} ms  ({int(row['runs'])} runs{verdict})"
        )


if __name__ == "__main__":
    main()
