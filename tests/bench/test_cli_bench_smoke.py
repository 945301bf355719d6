"""The CLI cold-start benchmark runs and reports every command, with and without a passphrase
(its figures go to BENCHMARKS.md; speed is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from backchannel_cli.bench import COMMANDS, VARIANTS


def test_cli_bench_reports_every_command_with_and_without_a_passphrase_and_the_agent() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backchannel_cli.bench", "--runs", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    expected = {"help", *(command + variant for command in COMMANDS for variant in VARIANTS)}
    assert expected <= report.keys()
    for command in expected:
        row = report[command]
        assert row["runs"] == 1 and 0 < row["min_ms"] <= row["p50_ms"] <= row["p90_ms"], command


def test_cli_bench_refuses_a_bad_run_count() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backchannel_cli.bench", "--runs", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "--runs must be at least 1" in done.stderr
