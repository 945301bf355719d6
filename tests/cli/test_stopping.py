"""Stopping is not an error: the relay, stopped with Ctrl-C (SIGINT) or SIGTERM while watchers
are connected, closes their sockets as "going away" and exits 0 within 2 s with one line; and
`make run`, stopped by Ctrl-C, prints no make error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backchannel_cli.service import WATCHING

from .conftest import Relay, Watcher, free_port, participants

STOP_WITHIN = 2.0
"""Seconds from the signal to the relay's exit (the issue's requirement)."""

ROOT = Path(__file__).resolve().parents[2]


def stop_with(relay: Relay, sig: signal.Signals) -> tuple[int, float]:
    """Send `sig` to the relay; -> (its exit code, seconds it took to exit)."""
    process = relay.process
    assert process is not None
    sent = time.monotonic()
    process.send_signal(sig)
    try:
        code = process.wait(STOP_WITHIN + 8)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        pytest.fail(f"the relay was still running {STOP_WITHIN + 8:g} s after {sig.name}")
    relay.process = None
    return code, time.monotonic() - sent


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_relay_stops_promptly_with_watchers_connected(
    make_relay: Any,
    store: tuple[str, ...],
    home: Path,
    watch: Callable[..., Watcher],
    sig: signal.Signals,
) -> None:
    relay = make_relay(f"stop-{sig.name}", *store)
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    watchers = [watch(kennedy), watch(khrushchev, "--json")]
    for watcher in watchers:  # a cold start of the CLI on a busy machine may take a while
        watcher.wait_for_notice(WATCHING, timeout=60)
    relay.wait_for_websockets(2)

    code, took = stop_with(relay, sig)

    assert code == 0, relay.log.read_text()
    assert took < STOP_WITHIN, f"the relay took {took:.2f} s to stop"
    log = relay.log.read_text()
    assert "Traceback" not in log, log
    assert log.rstrip().splitlines()[-1] == "backchannel-relay: stopped.", log
    for watcher in watchers:
        watcher.stop()


def test_an_idle_relay_stops_with_one_line(make_relay: Any) -> None:
    relay = make_relay("idle")
    code, took = stop_with(relay, signal.SIGINT)
    log = relay.log.read_text()
    assert code == 0 and took < STOP_WITHIN, log
    assert "Traceback" not in log and "Error" not in log, log
    assert log.rstrip().splitlines()[-1] == "backchannel-relay: stopped.", log


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
            return bool(json.load(answer) == {"status": "ok"})
    except (OSError, urllib.error.URLError, ValueError):
        return False


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_stopped_by_ctrl_c_is_no_make_error(tmp_path: Path) -> None:
    """Ctrl-C sends SIGINT to the terminal's whole foreground process group: make and the
    relay. The relay stops in one line and make prints no `make: *** [...] Interrupt`."""
    port = free_port()
    env = {
        **os.environ,
        "BACKCHANNEL_RELAY_PORT": str(port),
        "BACKCHANNEL_RELAY_DATA_DIR": str(tmp_path / "data"),
        "BACKCHANNEL_RELAY_NO_ACCESS_LOG": "1",
    }
    # `-o .venv/.installed`: run the recipe on the venv these tests run in, never reinstall it.
    # A process group of its own stands in for the terminal's foreground group.
    make = subprocess.Popen(
        ["make", "--no-print-directory", "-s", "-o", ".venv/.installed", "run"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _healthy(f"http://127.0.0.1:{port}"):
            if make.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`make run` did not start the relay: {make.communicate()[0]}")
            time.sleep(0.1)
        os.killpg(make.pid, signal.SIGINT)
        output, _ = make.communicate(timeout=STOP_WITHIN + 8)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
    # The relay exited 0, so make reports no error; make itself then ends by the interrupt
    # it received (GNU make re-raises SIGINT on itself once its recipe is done), as any
    # program stopped with Ctrl-C does, which a shell does not report either.
    assert make.returncode in (0, -signal.SIGINT), output
    assert "make: ***" not in output and "Traceback" not in output, output
    assert output.rstrip().splitlines()[-1] == "backchannel-relay: stopped.", output
