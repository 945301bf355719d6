"""Exercises on the relay, on each store: a scenario loaded by `backchannel-relay exercise load`,
its channel policy enforced on identified traffic (direct and forwarded), its clock, and control's
injects released by scenario time and signed with the relay's control key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from backchannel.envelope import Envelope, Route
from backchannel.exercise import Inject, verify_inject
from backchannel.keys import SigningPublicKey
from backchannel_cli.relay import RelayClient

from .conftest import RELAY, Backend, Member, Relay, fresh_keys, make_relay
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


async def member(relay: Relay, name: str, invite: str) -> Member:
    identity, secrets = fresh_keys()
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


async def test_policy_clock_and_injects(backend: Backend, tmp_path: Path) -> None:
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
        assert view["channels"] == {b: {"direct": True, "via": None},
                                    c: {"direct": False, "via": m},
                                    m: {"direct": True, "via": None}}  # fmt: skip
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

        outsider = await refused(RelayClient(relay.url).request("GET", "/v1/exercise"))
        assert outsider.status == 401
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
