"""Exercise control's HTTP API (issue 18, PROTOCOL.md §16.12) against a relay subprocess, on each
store: control's credentials (the admin token, or a cookie session with its CSRF token and the
relay's own origin) and never a participant's; every route; the schedule reaching participants
(a release at once, a skip never, an edit signed as edited); two relay processes on one
PostgreSQL database seeing each other's actions; and bad input answered 4xx, never 5xx."""

from __future__ import annotations

import base64
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backchannel.exercise import Inject, verify_inject
from backchannel.keys import SigningPublicKey

from .conftest import Backend, Relay, make_relay
from .test_exercises import SCENARIO, backend_of_its_own, control, member, role

NINE = "1962-10-22T09:00:00-04:00"


@pytest.fixture(params=["sqlite", "postgresql"])
def own_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from backend_of_its_own(request.param, tmp_path)


class Control:
    """Control's HTTP client: the admin token (as `by`), or a cookie session."""

    def __init__(self, relay: Relay, http: aiohttp.ClientSession, token: str = "") -> None:
        self.relay = relay
        self.http = http
        self.token = token or relay.admin_token()

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None,
        by: str | None = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if by is not None:
            sent["X-Backchannel-Controller"] = by
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        async with self.http.request(method, self.relay.url + path, data=data,
                                     headers=sent) as response:  # fmt: skip
            assert response.status < 500, await response.text()
            assert response.content_type == "application/json", await response.text()
            found = await response.json()
            if response.status >= 400:
                assert set(found) >= {"error", "message"}, found
            return response.status, found

    async def admin(self, method: str, path: str, body: Any = None, by: str = "ops") -> Any:
        status, found = await self.call(method, path, body, token=self.token, by=by)
        assert status in (200, 201), found
        return found


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def scenario(tmp_path: Path, tag: str) -> tuple[Path, tuple[str, str, str, str]]:
    a, b, c, m = (f"{x}-{tag}" for x in ("ka", "kb", "kc", "um"))
    roles = "".join(role(n, k) for n, k in ((a, "party"), (b, "party"), (c, "party"),
                                            (m, "mediator")))  # fmt: skip
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO.format(name=f"mini-{tag}", roles=roles, a=a, b=b, c=c, m=m))
    return path, (a, b, c, m)


def verified(view: dict[str, Any], key: SigningPublicKey) -> dict[int, dict[str, Any]]:
    """The view's injects by number, each signature checked against the control key."""
    found = {}
    for shown in view["injects"]:
        inject = Inject(shown["number"], shown["at"], tuple(shown["to"]), shown["title"],
                        shown["text"])  # fmt: skip
        verify_inject(key, view["exercise"], inject, base64.b64decode(shown["signature"]))
        found[shown["number"]] = shown
    return found


async def test_only_control_credentials_open_it(
    own_backend: Backend, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path, (a, *_rest) = scenario(tmp_path, os.urandom(3).hex())
    relay = make_relay(own_backend)
    try:
        loaded = control(own_backend, "load", str(path))
        invites = {r["name"]: r["invite"] for r in loaded["roles"]}
        ka = await member(relay, a, invites[a])
        api = Control(relay, http)
        token = relay.admin_token()

        status, found = await api.call("GET", "/v1/control/state")
        assert (status, found["error"]) == (401, "control_auth")
        status, found = await api.call("GET", "/v1/control/state", token="not-the-token")
        assert (status, found["error"]) == (401, "control_auth")
        participant = ka.client.token
        assert participant is not None
        status, found = await api.call("GET", "/v1/control/state", token=participant)
        assert (status, found["error"]) == (403, "not_control")
        status, found = await api.call("POST", "/v1/control/clock", {"action": "resume"},
                                       token=participant)  # fmt: skip
        assert (status, found["error"]) == (403, "not_control")
        state = await api.admin("GET", "/v1/control/state")
        assert state["exercise"] == loaded["exercise"]

        # A session: the wrong token is refused, the right one sets an HttpOnly cookie.
        status, found = await api.call("POST", "/v1/control/session",
                                       {"token": "nope", "name": "ann"})  # fmt: skip
        assert (status, found["error"]) == (401, "control_auth")
        async with http.post(relay.url + "/v1/control/session",
                             json={"token": token, "name": "ann"}) as response:  # fmt: skip
            assert response.status == 201
            made = await response.json()
            set_cookie = response.headers["Set-Cookie"]
            cookie = response.cookies["bc_control"].value
        assert made["name"] == "ann" and len(made["csrf"]) >= 40
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        assert "Path=/" in set_cookie and "Secure" not in set_cookie  # plain http here
        jar = {"Cookie": f"bc_control={cookie}"}
        status, state = await api.call("GET", "/v1/control/state", headers=jar)
        assert status == 200 and state["exercise"] == loaded["exercise"]
        status, found = await api.call("GET", "/v1/control/version", headers=jar)
        assert status == 200 and found["version"] == state["version"]

        # A change on the cookie needs the CSRF token, and the relay's own origin if any.
        body = {"action": "resume"}
        status, found = await api.call("POST", "/v1/control/clock", body, headers=jar)
        assert (status, found["error"]) == (403, "csrf")
        wrong = {**jar, "X-CSRF-Token": "x" * 43}
        status, found = await api.call("POST", "/v1/control/clock", body, headers=wrong)
        assert (status, found["error"]) == (403, "csrf")
        guarded = {**jar, "X-CSRF-Token": made["csrf"]}
        foreign = {**guarded, "Origin": "https://evil.example"}
        status, found = await api.call("POST", "/v1/control/clock", body, headers=foreign)
        assert (status, found["error"]) == (403, "csrf")
        own = {**guarded, "Origin": relay.url}
        status, found = await api.call("POST", "/v1/control/clock", body, headers=own)
        assert status == 200 and found["paused"] is False
        status, found = await api.call("POST", "/v1/control/clock", {"action": "pause"},
                                       headers=guarded)  # fmt: skip
        assert status == 200 and found["paused"] is True
        actions = (await api.admin("GET", "/v1/control/actions"))["actions"]
        assert [(x["by"], x["detail"]["change"]) for x in actions] == [
            ("ann", "resume"),
            ("ann", "pause"),
        ]

        # Ending the session: the cookie no longer works (and ending needs the CSRF token too).
        status, found = await api.call("DELETE", "/v1/control/session", headers=jar)
        assert (status, found["error"]) == (403, "csrf")
        status, found = await api.call("DELETE", "/v1/control/session", headers=guarded)
        assert status == 200 and found["ended"] is True
        status, found = await api.call("GET", "/v1/control/state", headers=jar)
        assert (status, found["error"]) == (401, "control_auth")
        await ka.client.close()
    finally:
        relay.kill(signal.SIGTERM)


async def test_the_schedule_reaches_participants(
    own_backend: Backend, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path, (a, b, c, _m) = scenario(tmp_path, os.urandom(3).hex())
    relay = make_relay(own_backend)
    try:
        loaded = control(own_backend, "load", str(path))
        invites = {r["name"]: r["invite"] for r in loaded["roles"]}
        ka, kb = await member(relay, a, invites[a]), await member(relay, b, invites[b])
        key = SigningPublicKey.from_bytes(base64.b64decode((await ka.client.info())["control_key"]))
        api = Control(relay, http)

        state = await api.admin("GET", "/v1/control/state")
        assert set(state) >= {"exercise", "title", "version", "roles", "clock", "injects",
                              "traffic", "deadlines", "health", "actions"}  # fmt: skip
        assert set(state["traffic"]) == {"exercise", "control_sees", "letters", "counts"}
        assert set(state["health"]) == {"connections", "queued_envelopes", "disk_free_bytes",
                                        "store"}  # fmt: skip
        assert state["health"]["store"] == own_backend.name
        assert (state["health"]["disk_free_bytes"] is None) == (own_backend.name != "sqlite")
        by_role = {r["name"]: r for r in state["roles"]}
        assert by_role[a]["registered"] and not by_role[a]["invite_open"]
        assert by_role[c]["invite_open"] and not by_role[c]["registered"]
        assert [(i["number"], i["status"]) for i in state["injects"]] == [
            (1, "scheduled"),
            (2, "scheduled"),
        ]
        version = state["version"]

        # Released by hand: a's view holds it at once (the clock is paused before it is due),
        # signed with the scenario time of its release.
        released = await api.admin("POST", "/v1/control/injects/1/release", by="ann")
        assert (released["status"], released["by"]) == ("released", "ann")
        assert released["at"] == state["clock"]["scenario_now"]
        shown = verified(await ka.client.request("GET", "/v1/exercise"), key)
        assert list(shown) == [1] and shown[1]["at"] == released["at"]
        status, found = await api.call("POST", "/v1/control/injects/1/release",
                                       token=relay.admin_token())  # fmt: skip
        assert (status, found["error"]) == (409, "inject_done")
        assert (await api.admin("GET", "/v1/control/version"))["version"] > version

        # Skipped: never delivered, however late the clock.
        skipped = await api.admin("POST", "/v1/control/injects/2/skip", by="bo")
        assert (skipped["status"], skipped["by"]) == ("skipped", "bo")
        for verb in ("release", "skip"):
            status, found = await api.call("POST", f"/v1/control/injects/2/{verb}",
                                           token=relay.admin_token())  # fmt: skip
            assert (status, found["error"]) == (409, "inject_done")

        # Added (HTML in it is data), edited while scheduled, delivered as edited and signed.
        added = await api.admin("POST", "/v1/control/injects", {
            "at": "1962-10-23T09:00:00-04:00", "to": [b, "observers"],
            "title": "<script>alert(1)</script>", "text": "<b>first</b>",
        }, by="cy")  # fmt: skip
        assert added["number"] == 3 and added["status"] == "scheduled" and added["by"] == "cy"
        edited = await api.admin("PATCH", "/v1/control/injects/3",
                                 {"text": "<i>second</i> & more"}, by="di")  # fmt: skip
        assert (edited["text"], edited["edited_by"]) == ("<i>second</i> & more", "di")
        assert edited["title"] == "<script>alert(1)</script>"
        moved = await api.admin("PATCH", "/v1/control/injects/3", {"at": NINE})
        assert moved["at"] < added["at"] and moved["number"] == 3
        clock = await api.admin("POST", "/v1/control/clock",
                                {"action": "set", "time": "1962-10-26T09:00:00-04:00"})  # fmt: skip
        assert clock["paused"] is True and clock["scenario_time"].startswith("1962-10-26 09:00")
        b_view = verified(await kb.client.request("GET", "/v1/exercise"), key)
        assert sorted(b_view) == [1, 3]
        assert b_view[3]["text"] == "<i>second</i> & more" and b_view[3]["at"] == moved["at"]
        a_view = verified(await ka.client.request("GET", "/v1/exercise"), key)
        assert sorted(a_view) == [1]  # inject 3 is b's (and observers'); 2 was skipped
        status, found = await api.call("PATCH", "/v1/control/injects/3", {"title": "late"},
                                       token=relay.admin_token())  # fmt: skip
        assert (status, found["error"]) == (409, "inject_done")  # delivered by the clock
        injects = (await api.admin("GET", "/v1/control/injects"))["injects"]
        assert [(i["number"], i["status"]) for i in injects] == [
            (1, "released"),
            (3, "released"),
            (2, "skipped"),
        ]

        # Invites: a fresh one for an open role (the earlier stops working), none for a taken.
        fresh = await api.admin("POST", "/v1/control/invites", {"role": c}, by="ed")
        assert fresh["role"] == c and len(fresh["invite"]) == 32
        status, found = await api.call("POST", "/v1/control/invites", {"role": a},
                                       token=relay.admin_token())  # fmt: skip
        assert (status, found["error"]) == (409, "registered")
        stale = await _refused_registration(relay, c, invites[c])
        assert stale == "invalid_invite"
        kc = await member(relay, c, fresh["invite"])
        state = await api.admin("GET", "/v1/control/state")
        assert {r["name"]: r["registered"] for r in state["roles"]}[c] is True
        assert [x["action"] for x in state["actions"]][:3] == ["invite", "clock", "edit"]
        logged = (await api.admin("GET", "/v1/control/actions"))["actions"]
        assert [(x["by"], x["action"]) for x in logged] == [
            ("ann", "release"),
            ("bo", "skip"),
            ("cy", "add"),
            ("di", "edit"),
            ("ops", "edit"),
            ("ops", "clock"),
            ("ed", "invite"),
        ]
        assert "invite" not in logged[-1]["detail"]  # the code is never logged
        # The command line reads the same log and schedule.
        assert control(own_backend, "actions")["actions"] == logged
        cli = control(own_backend, "injects")["injects"]
        assert [(i["number"], i["status"], i["by"]) for i in cli] == [
            (1, "released", "ann"),
            (3, "released", "cy"),
            (2, "skipped", "bo"),
        ]
        # A letter reported to control redraws the page too (the version grows).
        before = (await api.admin("GET", "/v1/control/version"))["version"]
        message_id = base64.b64encode(os.urandom(16)).decode()
        await ka.client.request("POST", "/v1/exercise/traffic", {"to": b, "message_id": message_id})
        assert (await api.admin("GET", "/v1/control/version"))["version"] > before
        for joined in (ka, kb, kc):
            await joined.client.close()
    finally:
        relay.kill(signal.SIGTERM)


async def _refused_registration(relay: Relay, name: str, invite: str) -> str:
    from backchannel_cli.relay import RelayRequestError

    try:
        joined = await member(relay, name, invite)
    except RelayRequestError as exc:
        return exc.code
    await joined.client.close()
    return "registered"


async def test_bad_input_is_4xx_json(
    own_backend: Backend, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path, (_a, *_rest) = scenario(tmp_path, os.urandom(3).hex())
    relay = make_relay(own_backend)
    try:
        control(own_backend, "load", str(path))
        api = Control(relay, http)
        token = relay.admin_token()
        long = "x" * 20_001
        cases: list[tuple[str, str, Any, int, str]] = [
            ("POST", "/v1/control/clock", b"{not json", 400, "invalid_json"),
            ("POST", "/v1/control/clock", [1, 2], 400, "invalid_json"),
            ("POST", "/v1/control/clock", {"action": "rewind"}, 400, "invalid_field"),
            (
                "POST",
                "/v1/control/clock",
                {"action": "speed", "speed": "fast"},
                400,
                "invalid_field",
            ),
            ("POST", "/v1/control/clock", {"action": "speed", "speed": 0}, 400, ""),
            ("POST", "/v1/control/clock", {"action": "speed", "speed": 1e9}, 400, ""),
            (
                "POST",
                "/v1/control/clock",
                {"action": "set", "time": "tomorrow"},
                400,
                "invalid_field",
            ),
            ("POST", "/v1/control/clock", {"action": "set", "time": 10**18}, 400, "invalid_field"),
            (
                "POST",
                "/v1/control/clock",
                {"action": "set", "time": "1962-10-22T09:00"},
                400,
                "invalid_field",
            ),
            ("POST", "/v1/control/injects/abc/release", None, 400, "invalid_field"),
            ("POST", "/v1/control/injects/0/skip", None, 400, "invalid_field"),
            (
                "POST",
                "/v1/control/injects/99999999999999999999999/skip",
                None,
                400,
                "invalid_field",
            ),
            ("POST", "/v1/control/injects/77/release", None, 404, "unknown_inject"),
            ("PATCH", "/v1/control/injects/1", {}, 400, "invalid_inject"),
            ("PATCH", "/v1/control/injects/1", {"title": 5}, 400, "invalid_field"),
            ("PATCH", "/v1/control/injects/1", {"text": " "}, 400, "invalid_field"),
            ("PATCH", "/v1/control/injects/1", {"text": long}, 400, "invalid_field"),
            (
                "PATCH",
                "/v1/control/injects/1",
                {"at": "1900-01-01T00:00:00+00:00"},
                400,
                "invalid_field",
            ),
            (
                "POST",
                "/v1/control/injects",
                {"at": NINE, "to": "all", "title": "t", "text": "x"},
                400,
                "invalid_field",
            ),
            (
                "POST",
                "/v1/control/injects",
                {"at": NINE, "to": [], "title": "t", "text": "x"},
                400,
                "invalid_field",
            ),
            (
                "POST",
                "/v1/control/injects",
                {"at": NINE, "to": ["nobody"], "title": "t", "text": "x"},
                400,
                "invalid_field",
            ),
            (
                "POST",
                "/v1/control/injects",
                {"at": NINE, "to": [{}], "title": "t", "text": "x"},
                400,
                "invalid_field",
            ),
            (
                "POST",
                "/v1/control/injects",
                {"at": NINE, "to": ["all"] * 65, "title": "t", "text": "x"},
                400,
                "invalid_field",
            ),
            (
                "POST",
                "/v1/control/injects",
                {"at": NINE, "to": ["all"], "title": "t" * 201, "text": "x"},
                400,
                "invalid_field",
            ),
            (
                "POST",
                "/v1/control/injects",
                {"at": NINE, "to": ["all"], "title": "t"},
                400,
                "invalid_field",
            ),
            (
                "POST",
                "/v1/control/injects",
                {"to": ["all"], "title": "t", "text": "x"},
                400,
                "invalid_field",
            ),
            ("POST", "/v1/control/invites", {"role": 7}, 400, "invalid_field"),
            ("POST", "/v1/control/invites", {"role": "nobody"}, 404, "unknown_role"),
            ("GET", "/v1/control/state?exercise=nope", None, 404, "unknown_exercise"),
            ("GET", "/v1/control/actions?newest=x", None, 400, "invalid_query"),
        ]
        for method, route, body, status, code in cases:
            raw = body if isinstance(body, bytes) else None
            got, found = await api.call(method, route, None if raw else body, token=token,
                                        raw=raw)  # fmt: skip
            assert got == status, (route, body, found)
            assert not code or found["error"] == code, (route, body, found)
        got, found = await api.call("GET", "/v1/control/state", token=token, by="x" * 65)
        assert (got, found["error"]) == (400, "invalid_field")
        big = b'{"text": "' + b"x" * 200_000 + b'"}'
        got, found = await api.call("PATCH", "/v1/control/injects/1", token=token, raw=big)
        assert got == 413
        # Nothing refused was recorded; the schedule is as loaded.
        assert (await api.admin("GET", "/v1/control/actions"))["actions"] == []
        injects = (await api.admin("GET", "/v1/control/injects"))["injects"]
        assert [(i["number"], i["status"], i["edited_by"]) for i in injects] == [
            (1, "scheduled", None),
            (2, "scheduled", None),
        ]
    finally:
        relay.kill(signal.SIGTERM)


async def test_two_relays_on_one_database_see_each_others_actions(
    postgres: Backend, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path, _roles = scenario(tmp_path, os.urandom(3).hex())
    loaded = control(postgres, "load", str(path))
    name = loaded["exercise"]
    first, second = make_relay(postgres), make_relay(postgres)
    try:
        one = Control(first, http)
        two = Control(second, http, one.token)  # the token is printed on the store's first start
        query = f"?exercise={name}"
        await one.admin("POST", f"/v1/control/injects/1/release{query}", by="one")
        seen = await two.admin("GET", f"/v1/control/state{query}")
        assert next((i["number"], i["status"], i["by"]) for i in seen["injects"]) == (
            1,
            "released",
            "one",
        )
        await two.admin("POST", f"/v1/control/injects/2/skip{query}", by="two")
        status, found = await one.call("POST", f"/v1/control/injects/2/release{query}",
                                       token=first.admin_token())  # fmt: skip
        assert (status, found["error"]) == (409, "inject_done")  # the other process's skip
        back = await one.admin("GET", f"/v1/control/state{query}")
        assert [(x["by"], x["action"]) for x in back["actions"]] == [
            ("two", "skip"),
            ("one", "release"),
        ]
        versions = [(await c.admin("GET", f"/v1/control/version{query}"))["version"]
                    for c in (one, two)]  # fmt: skip
        assert versions[0] == versions[1] == back["version"]
    finally:
        first.kill(signal.SIGTERM)
        second.kill(signal.SIGTERM)
