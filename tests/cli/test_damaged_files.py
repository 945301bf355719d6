"""Hostile or damaged files handed to the two command-line tools: a readable refusal in one line,
never a traceback or an "internal error". Each case is a crash the decoder fuzzing found
(`tests/fuzz`, whose targets keep the same inputs as regressions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from backchannel_relay.cli import main as relay_main
from tests.fuzz import seeds

from .conftest import User, assert_one_error_line

DEEP_JSON = "[" * 100_000


def test_verify_record_refuses_json_nested_too_deeply(home: Path, tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP_JSON)
    line = User(home, "kennedy").fails("verify-record", str(deep))
    assert line == f"Error: {deep} is not a proposal record: its JSON is nested too deeply"


def test_verify_record_checks_a_chain_of_conditions_longer_than_the_recursion_limit(
    home: Path, tmp_path: Path
) -> None:
    chain = tmp_path / "chain.json"
    chain.write_bytes(seeds.condition_chain(1_100))
    result = User(home, "kennedy").run("verify-record", str(chain), "--json")
    assert result.exit_code == 1, result.output  # every record is checked; none is signed
    records = json.loads(result.stdout)["records"]
    assert len(records) == 1_100 and not any(r["valid"] for r in records)


def test_a_profile_file_nested_too_deeply_is_damaged(home: Path) -> None:
    kennedy = User(home, "kennedy")
    kennedy.init("http://127.0.0.1:9")
    (kennedy.directory / "profile.json").write_text(DEEP_JSON)
    assert kennedy.fails("inbox") == f"Error: {kennedy.directory / 'profile.json'} is damaged"


SCENARIO = seeds.scenarios()[0].decode()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = " + "[" * 5_000 + "]" * 5_000, "the scenario nests arrays or tables too deeply"),
        (
            SCENARIO.replace("direct = [", "direct = [[[1], [2]], ", 1),
            "'policy.direct[0]' must name two roles, as strings",
        ),
        (
            SCENARIO.replace("1962-10-22T08:00:00-04:00", "0001-01-01T00:00:00+05:00", 1),
            "'clock.start' must be between the years 2 and 9998 (UTC)",
        ),
        (
            SCENARIO.replace('name = "cuba-1962"', 'name = "cuba-1962\\n"', 1),
            "'exercise.name' must be 1 to 64 lower-case letters, digits and hyphens",
        ),
    ],
    ids=["nested", "unhashable-pair", "year-one", "trailing-newline"],
)
def test_exercise_load_refuses_a_hostile_scenario_in_one_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(source, encoding="utf-8")
    store = ["--data-dir", str(tmp_path / "relay")]
    result = CliRunner().invoke(relay_main, ["exercise", "load", str(scenario), *store])
    assert result.exit_code != 0
    line = assert_one_error_line(result.output)
    assert line.startswith(f"Error: {expected}"), line
