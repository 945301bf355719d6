"""The control page's live channel, `GET /v1/control/events`, spoken to directly: the version at
once and after each change, control's credentials only, the end of the stream with the end of
the session, and at most 32 streams per relay process."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.cli.conftest import GENEROUS, Relay
from tests.relay.conftest import _postgres

from .conftest import Control

SCENARIO = """
schema = 1
[exercise]
name = "events"
title = "Events"
brief = "The live channel."
[clock]
start = "1962-10-22T08:00:00-04:00"
speed = 60.0
[[roles]]
name = "rusk"
kind = "party"
title = "Secretary of State"
brief = "."
[[roles]]
name = "gromyko"
kind = "party"
title = "Foreign Minister"
brief = "."
[[injects]]
at = "1962-10-22T09:00:00-04:00"
to = ["all"]
title = "News"
text = "Something."
"""


@pytest.fixture(scope="module")
def control(control_relay: Control) -> Control:
    control_relay.load(SCENARIO)
    return control_relay


class Stream:
    """One open event stream, read line by line."""

    def __init__(self, control: Control, headers: dict[str, str]) -> None:
        parts = urlsplit(control.url)
        assert parts.hostname is not None
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        self.connection.request("GET", "/v1/control/events", headers=headers)
        self.response = self.connection.getresponse()

    def event(self, timeout: float = 5.0) -> tuple[str, dict[str, int]]:
        """The next event (name, data), skipping comments."""
        deadline = time.monotonic() + timeout
        name, data = "", ""
        while time.monotonic() < deadline:
            line = self.response.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and name:
                return name, json.loads(data)
        raise TimeoutError("no event")

    def ended(self) -> bool:
        try:
            return self.response.readline() == b""
        except TimeoutError:
            return False

    def close(self) -> None:
        self.connection.close()


@contextmanager
def streams(control: Control, count: int, headers: dict[str, str]) -> Iterator[list[Stream]]:
    opened: list[Stream] = []
    try:
        for _ in range(count):
            opened.append(Stream(control, headers))
        yield opened
    finally:
        for stream in opened:
            stream.close()


def admin(control: Control, name: str = "control") -> dict[str, str]:
    return {"Authorization": f"Bearer {control.token}", "X-Backchannel-Controller": name}


def test_the_version_at_once_and_after_each_change(control: Control) -> None:
    with streams(control, 1, admin(control)) as (stream,):
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type", "").startswith("text/event-stream")
        assert stream.response.getheader("Cache-Control") == "no-store"
        name, data = stream.event()
        assert name == "version" and data == {"version": control.state()["version"]}
        first = data["version"]
        status, _, _ = control.api("POST", "/v1/control/invites", {"role": "rusk"})
        assert status == 201
        name, data = stream.event()
        assert name == "version" and data["version"] > first
        control.register("gromyko")  # a registration is a change the page must show too
        assert stream.event()[1]["version"] > data["version"]


def test_only_control_opens_it(control: Control) -> None:
    for headers, status, code in [
        ({}, 401, "control_auth"),
        ({"Authorization": "Bearer not-it"}, 401, "control_auth"),
        ({"Cookie": "bc_control=made-up"}, 401, "control_auth"),
    ]:
        got, _, body = control.api("GET", "/v1/control/events", headers=headers, bearer=False)
        assert (got, body["error"]) == (status, code), body
    got, _, body = control.api("GET", "/v1/control/events?exercise=nowhere")
    assert (got, body["error"]) == (404, "unknown_exercise"), body


def test_a_session_stream_ends_with_the_session(control: Control) -> None:
    status, headers, session = control.api(
        "POST", "/v1/control/session", {"token": control.token, "name": "night shift"},
        bearer=False,
    )  # fmt: skip
    assert status == 201, session
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    with streams(control, 1, {"Cookie": cookie}) as (stream,):
        assert stream.event()[0] == "version"
        status, _, ended = control.api(
            "DELETE", "/v1/control/session", headers={"Cookie": cookie,
                                                      "X-CSRF-Token": session["csrf"]},
            bearer=False,
        )  # fmt: skip
        assert status == 200 and ended["ended"] is True, ended
        deadline = time.monotonic() + 5
        while not stream.ended():
            assert time.monotonic() < deadline, "the stream outlived its session"


def test_at_most_32_streams_per_relay_process(control: Control) -> None:
    with streams(control, 32, admin(control)) as opened:
        for stream in opened:
            assert stream.response.status == 200
            assert stream.event()[0] == "version"
        status, _, body = control.api("GET", "/v1/control/events")
        assert (status, body["error"]) == (429, "too_many_streams"), body
    # closed ones free their places (the relay notices within a poll)
    deadline = time.monotonic() + 5
    while True:
        with streams(control, 1, admin(control)) as (again,):
            if again.response.status == 200:
                break
        assert time.monotonic() < deadline, "closed streams kept their places"
        time.sleep(0.2)


def test_a_change_through_another_relay_process_shows(tmp_path: Path) -> None:
    """Two relay processes on one PostgreSQL: a stream on the first sees a release made
    through the second, and the first's state names who made it."""
    for backend in _postgres(tmp_path / "postgres"):
        first = Relay(tmp_path / "first", None, *GENEROUS, *backend.store_args).start()
        second = Relay(tmp_path / "second", None, *GENEROUS, *backend.store_args).start()
        try:
            here = Control(first, tmp_path / "home")
            there = Control(second, tmp_path / "home", token=here.token)
            here.load(SCENARIO)
            with streams(here, 1, admin(here)) as (stream,):
                before = stream.event()[1]["version"]
                status, _, body = there.api(
                    "POST", "/v1/control/injects/1/release", {},
                    headers={"X-Backchannel-Controller": "bob"},
                )  # fmt: skip
                assert status == 200, body
                assert stream.event()[1]["version"] > before
            newest = here.state()["actions"][0]
            assert (newest["by"], newest["action"]) == ("bob", "release")
        finally:
            second.stop()
            first.stop()
