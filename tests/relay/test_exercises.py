"""Exercises on the relay, on each store: a scenario loaded by `backchannel-relay exercise load`,
its channel policy enforced on identified traffic (direct and forwarded), its clock, and control's
injects released by scenario time and signed with the relay's control key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backchannel.envelope import Envelope, Route
from backchannel.exercise import Inject, verify_inject
from backchannel.keys import SigningPublicKey
from backchannel_cli.relay import RelayClient, RelayRequestError

from .conftest import RELAY, Backend, Member, Relay, _postgres, fresh_keys, make_relay
from .test_api import envelope, refused

SCENARIO = """
schema = 1
[exercise]
name = "{name}"
title = "A small crisis"
brief = "Three parties and a mediator."
[clock]
start = "1962-10-22T08:00:00-04:00"
speed = 3600.0
{roles}
[policy]
direct = [["{a}", "{b}"]]
[[policy.via]]
between = ["{a}", "{c}"]
mediator = "{m}"
[[injects]]
at = "1962-10-22T09:00:00-04:00"
to = ["all"]
title = "News"
text = "Something happened at nine."
[[injects]]
at = "1962-10-25T09:00:00-04:00"
to = ["{b}"]
title = "Later"
text = "Only for b, three days on."
"""


def role(name: str, kind: str) -> str:
    return f'[[roles]]\nname = "{name}"\nkind = "{kind}"\ntitle = "{name}"\nbrief = "{name}."\n'


def control(backend: Backend, *args: str) -> Any:
    done = subprocess.run(
        [*RELAY, "exercise", *args, *backend.store_args, "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def member(relay: Relay, name: str, invite: str, one_time: int = 5) -> Member:
    """Register `name` with `invite` (fresh keys, `one_time` one-time prekeys) and log in."""
    identity, secrets = fresh_keys(one_time=one_time)
    published = secrets.published(identity)
    client = RelayClient(relay.url)
    await client.register(
        identity, name, invite, published.signed, published.kem_last_resort,
        published.one_time, published.kem_one_time,
    )  # fmt: skip
    await client.login(identity, name)
    return Member(name, identity, secrets, client)


def forwarded(author: str, carrier: str, to: str, *, onward: bool = False) -> bytes:
    """An envelope for `to` inside one for the carrier (or, `onward`, from the carrier)."""
    inner = Envelope.from_bytes(envelope(author, to))
    sender, recipient = (carrier, to) if onward else (author, carrier)
    return Envelope(recipient, sender, inner.message_id, Route.FORWARD, inner.expires_at,
                    inner.to_bytes()).to_bytes()  # fmt: skip


def backend_of_its_own(kind: str, tmp_path: Path) -> Iterator[Backend]:
    """A store of one test's own: a SQLite file (one relay process per file, and the session's
    shared relay may be serving the shared one) or a throwaway PostgreSQL database, so that the
    exercises loaded there are the test's only ones (`exercise status` needs no --exercise)."""
    if kind == "sqlite":
        yield Backend("sqlite", ["--data-dir", str(tmp_path / "data")], tmp_path)
        return
    yield from _postgres(tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def own_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from backend_of_its_own(request.param, tmp_path)


async def test_policy_clock_and_injects(own_backend: Backend, tmp_path: Path) -> None:
    backend = own_backend
    tag = os.urandom(3).hex()
    a, b, c, m = (f"{x}-{tag}" for x in ("ka", "kb", "kc", "um"))
    roles = "".join(role(n, k) for n, k in ((a, "party"), (b, "party"), (c, "party"),
                                            (m, "mediator")))  # fmt: skip
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO.format(name=f"mini-{tag}", roles=roles, a=a, b=b, c=c, m=m))
    relay = make_relay(backend)
    try:
        loaded = control(backend, "load", str(path))
        assert loaded["exercise"] == f"mini-{tag}" and loaded["clock"]["paused"] is True
        invites = {r["name"]: r["invite"] for r in loaded["roles"]}
        ka, kb, kc, um = [await member(relay, n, invites[n]) for n in (a, b, c, m)]
        status = control(backend, "status", "--exercise", f"mini-{tag}")
        assert all(r["registered"] for r in status["roles"])

        # Policy: a-b direct; a-c only through m; b-c not at all; mediators write to anyone.
        await ka.client.send([envelope(a, b)])
        await um.client.send([envelope(m, c)])
        await kc.client.send([envelope(c, m)])
        through = await refused(ka.client.send([envelope(a, c)]))
        assert (through.status, through.code) == (403, "policy_forbids")
        assert f"{a} reaches {c} only through {m}; send it through {m}" in through.message
        none = await refused(kb.client.send([envelope(b, c)]))
        assert none.code == "policy_forbids" and "no channel" in none.message
        await ka.client.send([forwarded(a, m, c)])  # blind forwarding, first hop
        await um.client.send([forwarded(a, m, c, onward=True)])  # and second
        wrong = await refused(kb.client.send([forwarded(b, m, c)]))
        assert wrong.code == "policy_forbids"
        detour = await refused(ka.client.send([forwarded(a, b, c)]))  # b is no mediator
        assert detour.code == "policy_forbids"

        # The clock is paused: nothing due. Resumed at 3600x, nine o'clock comes in a second.
        view = await ka.client.request("GET", "/v1/exercise")
        assert view["role"]["name"] == a and view["injects"] == []
        record = {"letters": "record"}
        assert view["channels"] == {b: {"direct": True, "via": None, **record},
                                    c: {"direct": False, "via": m, **record},
                                    m: {"direct": True, "via": None, **record}}  # fmt: skip
        control(backend, "clock", "resume", "--exercise", f"mini-{tag}")
        await asyncio.sleep(1.3)
        view = await ka.client.request("GET", "/v1/exercise")
        (news,) = view["injects"]
        assert (news["number"], news["title"]) == (1, "News")
        key = SigningPublicKey.from_bytes(base64.b64decode((await ka.client.info())["control_key"]))
        inject = Inject(news["number"], news["at"], tuple(news["to"]), news["title"], news["text"])
        verify_inject(key, view["exercise"], inject, base64.b64decode(news["signature"]))
        clock = control(backend, "clock", "pause", "--exercise", f"mini-{tag}")
        frozen = clock["scenario_now"]
        await asyncio.sleep(0.3)
        assert control(backend, "status")["clock"]["scenario_now"] == frozen
        control(backend, "clock", "set", "1962-10-25T10:00:00-04:00")
        b_view = await kb.client.request("GET", "/v1/exercise")
        assert [i["title"] for i in b_view["injects"]] == ["News", "Later"]
        assert [i["title"] for i in (await ka.client.request("GET", "/v1/exercise"))["injects"]] \
            == ["News"]  # fmt: skip

        stranger = RelayClient(relay.url)
        outsider = await refused(stranger.request("GET", "/v1/exercise"))
        assert outsider.status == 401
        await stranger.close()
        for each in (ka, kb, kc, um):
            await each.client.close()
    finally:
        relay.kill()


def test_bad_scenarios_get_one_clear_line(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    for text, expected in [
        ("schema = 1\n[exercise]\nname = 'Bad Name'\n", "'exercise.name' must be"),
        ("not toml at all [", "not valid TOML"),
        ("schema = 2\n", "'schema' must be 1"),
    ]:
        path.write_text(text)
        done = subprocess.run(
            [*RELAY, "exercise", "load", str(path), *backend.store_args],
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    missing = subprocess.run([*RELAY, "exercise", "load", "no-such-scenario",
                              *backend.store_args], capture_output=True, text=True)  # fmt: skip
    assert missing.returncode != 0 and "cuba-1962" in missing.stderr


async def registration_refused(relay: Relay, name: str, invite: str) -> RelayRequestError:
    """Registering `name` with `invite` is refused (the client is closed either way)."""
    identity, secrets = fresh_keys()
    keys = secrets.published(identity)
    client = RelayClient(relay.url)
    try:
        attempt = client.register(identity, name, invite, keys.signed, keys.kem_last_resort,
                                  keys.one_time, keys.kem_one_time)  # fmt: skip
        return await refused(attempt)
    finally:
        await client.close()


def control_fails(backend: Backend, *args: str) -> tuple[str, dict[str, Any]]:
    """A refused `backchannel-relay exercise ...`: -> (its one `Error:` line, its --json error)."""
    plain = subprocess.run(
        [*RELAY, "exercise", *args, *backend.store_args], capture_output=True, text=True
    )
    assert plain.returncode != 0 and "Traceback" not in plain.stderr, plain.stderr
    (line,) = plain.stderr.splitlines()
    assert line.startswith("Error: ") and plain.stdout == "", plain
    coded = subprocess.run(
        [*RELAY, "exercise", *args, *backend.store_args, "--json"], capture_output=True, text=True
    )
    assert coded.returncode != 0
    error = json.loads(coded.stdout)
    assert error["message"] in line
    return line, error


def small_scenario(tmp_path: Path, kinds: dict[str, str], name: str | None = None) -> Path:
    """A scenario of these roles (a-b direct, a-c through m), written to a file."""
    tag = os.urandom(3).hex()
    names = {k: f"{k}{tag}" for k in ("a", "b", "c", "m")}
    roles = "".join(role(names[k], kind) for k, kind in kinds.items())
    path = tmp_path / f"scenario-{tag}.toml"
    path.write_text(SCENARIO.format(name=name or f"mini-{tag}", roles=roles, **names))
    return path


def names_in(path: Path) -> dict[str, str]:
    """Role key (a, b, c, m) -> the role's name in the scenario at `path`."""
    from backchannel.exercise import parse_scenario

    scenario = parse_scenario(path.read_text())
    return {r.name[0]: r.name for r in scenario.roles}


KINDS = {"a": "party", "b": "party", "c": "party", "m": "mediator"}


async def test_load_after_some_roles_registered_binds_them(
    own_backend: Backend, tmp_path: Path
) -> None:
    """The README's order: invites by hand, some register, then the scenario is loaded. The
    registered are bound to their roles, the others get invites, and the exercise works."""
    backend = own_backend
    path = small_scenario(tmp_path, KINDS)
    names = names_in(path)
    relay = make_relay(backend)
    try:
        early = [await member(relay, names[k], relay.invite(names[k], KINDS[k])) for k in "am"]
        pending = relay.invite(names["b"], "party")  # handed out, never used

        loaded = control(backend, "load", str(path))
        by_name = {r["name"]: r for r in loaded["roles"]}
        assert loaded["loaded_before"] is False and loaded["store"]
        assert loaded["bound"] == [names["a"], names["m"]]
        for key in "am":
            assert by_name[names[key]]["registered"] is True
            assert by_name[names[key]]["invite"] is None
        for key in "bc":
            assert by_name[names[key]]["registered"] is False and by_name[names[key]]["invite"]
        assert loaded["invites_expire_at"] > 0

        # Each open role has one invite that works: the one just printed.
        stale = await registration_refused(relay, names["b"], pending)
        assert stale.code == "invalid_invite"
        later = [await member(relay, names[k], by_name[names[k]]["invite"]) for k in "bc"]
        status = control(backend, "status", "--exercise", loaded["exercise"])
        assert all(r["registered"] for r in status["roles"])

        # The bound roles play their parts: a's view and the policy through m.
        ka, um = early
        kb, kc = later
        view = await ka.client.request("GET", "/v1/exercise")
        assert view["role"]["name"] == names["a"] and view["exercise"] == loaded["exercise"]
        await ka.client.send([envelope(names["a"], names["b"])])
        through = await refused(ka.client.send([envelope(names["a"], names["c"])]))
        assert through.code == "policy_forbids"
        await ka.client.send([forwarded(names["a"], names["m"], names["c"])])
        await um.client.send([forwarded(names["a"], names["m"], names["c"], onward=True)])
        for each in (ka, um, kb, kc):
            await each.client.close()
    finally:
        relay.kill()


async def test_loading_again_prints_the_invites_still_open(
    own_backend: Backend, tmp_path: Path
) -> None:
    backend = own_backend
    path = small_scenario(tmp_path, KINDS)
    names = names_in(path)
    relay = make_relay(backend)
    try:
        first = control(backend, "load", str(path))
        exercise = first["exercise"]
        invites = {r["name"]: r["invite"] for r in first["roles"]}
        ka = await member(relay, names["a"], invites[names["a"]])
        control(backend, "clock", "set", "1962-10-23T12:00:00-04:00", "--exercise", exercise)
        clock = control(backend, "status", "--exercise", exercise)["clock"]

        again = control(backend, "load", str(path))
        assert again["exercise"] == exercise and again["loaded_before"] is True
        assert again["bound"] == [names["a"]]
        fresh = {r["name"]: r["invite"] for r in again["roles"]}
        assert fresh[names["a"]] is None
        assert set(fresh) == set(invites) and all(fresh[names[k]] for k in "bcm")
        # The clock is the exercise's, untouched by loading again.
        assert again["clock"]["anchor_ms"] == clock["anchor_ms"]
        assert again["clock"]["paused"] is True
        # The invites printed first for the open roles were replaced by these.
        old = await registration_refused(relay, names["b"], invites[names["b"]])
        assert old.code == "invalid_invite"
        kb = await member(relay, names["b"], fresh[names["b"]])
        # A third time, once everyone has registered, there is nothing to hand out.
        kc = await member(relay, names["c"], fresh[names["c"]])
        um = await member(relay, names["m"], fresh[names["m"]])
        last = control(backend, "load", str(path))
        assert all(r["invite"] is None and r["registered"] for r in last["roles"])
        assert last["invites_expire_at"] is None
        for each in (ka, kb, kc, um):
            await each.client.close()
    finally:
        relay.kill()


async def test_a_refused_load_creates_nothing(own_backend: Backend, tmp_path: Path) -> None:
    """A registered name whose role differs from the scenario's, a name already a role in
    another exercise, another scenario under a loaded name: each is refused in one line,
    naming the conflict, before anything is created."""
    backend = own_backend
    path = small_scenario(tmp_path, KINDS)
    names = names_in(path)
    relay = make_relay(backend)
    try:
        observer = await member(relay, names["b"], relay.invite(names["b"], "observer"))
        line, error = control_fails(backend, "load", str(path))
        assert error["error"] == "role_conflict"
        assert (
            f"{names['b']} is registered as an observer, but the scenario makes {names['b']} "
            "a party" in line
        )
        exercise = path.read_text().split('name = "', 1)[1].split('"', 1)[0]
        _, missing = control_fails(backend, "status", "--exercise", exercise)
        assert missing["error"] == "unknown_exercise"  # no half-created exercise

        # With the scenario's kind made the participant's, the same scenario loads.
        path.write_text(path.read_text().replace(
            f'name = "{names["b"]}"\nkind = "party"', f'name = "{names["b"]}"\nkind = "observer"'
        ))  # fmt: skip
        loaded = control(backend, "load", str(path))
        assert loaded["bound"] == [names["b"]]

        # The same exercise name from another scenario is refused; the loaded one stands.
        other = path.with_name("other.toml")
        other.write_text(path.read_text().replace("A small crisis", "Another crisis"))
        _, exists = control_fails(backend, "load", str(other))
        assert exists["error"] == "exercise_exists"
        assert control(backend, "status", "--exercise", exercise)["title"] == "A small crisis"

        # A role of this exercise in a new one: refused, and the new one is not created.
        clash = small_scenario(tmp_path, KINDS)
        clash.write_text(clash.read_text().replace(names_in(clash)["a"], names["a"]))
        line, taken = control_fails(backend, "load", str(clash))
        assert taken["error"] == "role_taken" and exercise in line and names["a"] in line
        new_name = clash.read_text().split('name = "', 1)[1].split('"', 1)[0]
        assert control_fails(backend, "status", "--exercise", new_name)[1]["error"] == (
            "unknown_exercise"
        )
        await observer.client.close()
    finally:
        relay.kill()


async def test_communiques_are_checked_and_refused_in_4xx(
    own_backend: Backend, tmp_path: Path
) -> None:
    """POST /v1/exercise/communiques: the author's signature, its time near the relay's, a
    text within bounds; an observer refused; everything kept in order for every role."""
    import time

    from backchannel.exercise import Communique, sign_communique

    backend = own_backend
    path = small_scenario(tmp_path, {"a": "party", "b": "party", "c": "observer", "m": "mediator"})
    names = names_in(path)
    relay = make_relay(backend)
    try:
        loaded = control(backend, "load", str(path))
        invites = {r["name"]: r["invite"] for r in loaded["roles"]}
        ka, kc = [await member(relay, names[k], invites[names[k]]) for k in ("a", "c")]
        exercise = loaded["exercise"]

        def body(who: Member, text: str, at: int | None = None, signer: Member | None = None
                 ) -> dict[str, Any]:  # fmt: skip
            at = int(time.time() * 1000) if at is None else at
            statement = Communique(exercise, who.name, at, text)
            sig = sign_communique((signer or who).identity.signing, statement)
            return {"at": at, "text": text, "signature": base64.b64encode(sig).decode()}

        def post(who: Member, payload: Any) -> Any:
            return who.client.request("POST", "/v1/exercise/communiques", payload)

        assert (await post(ka, body(ka, "First.")))["number"] == 1
        observer = await refused(post(kc, body(kc, "I only watch.")))
        assert (observer.status, observer.code) == (403, "role_forbids")
        for payload, code in [
            (body(ka, "Forged.", signer=kc), "invalid_communique"),
            (body(ka, "Back-dated.", at=int(time.time() * 1000) - 3_600_000), "invalid_field"),
            (body(ka, "x" * 8_001), "invalid_communique"),
            ({**body(ka, "ok"), "text": 5}, "invalid_field"),
            ({**body(ka, "ok"), "at": "now"}, "invalid_field"),
            ({**body(ka, "ok"), "signature": "AAAA"}, "invalid_field"),
            ([], "invalid_json"),
        ]:
            error = await refused(post(ka, payload))
            assert error.status == 400 and error.code in (code, "invalid_field"), error
        assert (await post(ka, body(ka, "Second.")))["number"] == 2
        view = await kc.client.request("GET", "/v1/exercise")
        assert [(c["number"], c["author"], c["text"]) for c in view["communiques"]] == [
            (1, names["a"], "First."), (2, names["a"], "Second."),
        ]  # fmt: skip
        for each in (ka, kc):
            await each.client.close()
    finally:
        relay.kill()
