"""`POST /v1/exercise/traffic` on each store (PROTOCOL.md §16.11): the relay keeps what the
pair's class lets control see and refuses a report that would tell it more or less."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from backchannel.content import Letter, sign_letter
from backchannel.control_copy import parse_public, seal
from backchannel.keys import SigningPublicKey

from .conftest import Backend, make_relay
from .test_api import refused
from .test_exercises import control, member, own_backend, role

__all__ = ["own_backend"]

SCENARIO = """
schema = 1
[exercise]
name = "{name}"
title = "Copies"
brief = "Three parties and an observer."
[clock]
start = "1962-10-22T08:00:00-04:00"
{roles}
[policy]
direct = [["{a}", "{b}"], ["{a}", "{c}"]]
[[channels.pairs]]
between = ["{a}", "{b}"]
record = "content"
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_reports_carry_exactly_what_the_class_allows(
    own_backend: Backend, tmp_path: Path
) -> None:
    backend = own_backend
    tag = os.urandom(3).hex()
    a, b, c, o = (f"{x}-{tag}" for x in ("ta", "tb", "tc", "to"))
    roles = "".join(role(n, k) for n, k in ((a, "party"), (b, "party"), (c, "party"),
                                            (o, "observer")))  # fmt: skip
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO.format(name=f"copies-{tag}", roles=roles, a=a, b=b, c=c))
    relay = make_relay(backend)
    try:
        loaded = control(backend, "load", str(path))
        invites = {r["name"]: r["invite"] for r in loaded["roles"]}
        ta, tb, _tc, to = [await member(relay, n, invites[n]) for n in (a, b, c, o)]
        view = await ta.client.request("GET", "/v1/exercise")
        published = view["control_key"]
        public = parse_public(base64.b64decode(published["x25519"]),
                              base64.b64decode(published["mlkem"]))  # fmt: skip
        info = await ta.client.info()
        signer = SigningPublicKey.from_bytes(base64.b64decode(info["control_key"]))
        public.verify(signer, view["exercise"], base64.b64decode(published["signature"]))
        assert view["channels"][b]["letters"] == "record"

        message_id = os.urandom(16)
        letter = Letter(message_id, a, ta.identity.public.keys, b, tb.identity.public.keys, 1, "x")
        copy = seal(public, message_id, sign_letter(ta.identity, letter).to_content())
        post = "/v1/exercise/traffic"
        missing = await refused(ta.client.request("POST", post,
                                                  {"to": b, "message_id": _b64(message_id)}))
        assert (missing.status, missing.code) == (400, "copy_required")
        extra = await refused(ta.client.request("POST", post, {
            "to": c, "message_id": _b64(message_id), "copy": _b64(copy)}))  # fmt: skip
        assert (extra.status, extra.code) == (400, "copy_refused")
        for _again in range(2):  # a report sent again (its answer lost) is kept once
            told = await ta.client.request("POST", post, {
                "to": b, "message_id": _b64(message_id), "copy": _b64(copy)})  # fmt: skip
            assert told == {"class": "record", "control_sees": "content"}
        told = await ta.client.request("POST", post, {"to": c, "message_id": _b64(os.urandom(16))})
        assert told == {"class": "record", "control_sees": "envelope"}

        for body, code in [
            ({"to": f"nobody-{tag}", "message_id": _b64(message_id)}, "unknown_role"),
            ({"to": a, "message_id": _b64(message_id)}, "unknown_role"),
            ({"to": b, "message_id": _b64(b"short")}, "invalid_field"),
            ({"to": b, "message_id": _b64(message_id), "copy": "not base64!"}, "invalid_field"),
            ({"to": 7, "message_id": _b64(message_id)}, "invalid_field"),
            ({"to": b, "class": "confidential", "message_id": _b64(message_id)}, "invalid_field"),
            ({"to": b, "class": "off_the_record", "message_id": _b64(message_id)},
             "invalid_field"),
        ]:
            bad = await refused(ta.client.request("POST", post, body))
            assert (bad.status, bad.code) == (400, code), bad.message
        big = {"to": b, "message_id": _b64(message_id), "copy": _b64(bytes(200_000))}
        assert (await refused(ta.client.request("POST", post, big))).status in (400, 413)
        observer = await refused(to.client.request("POST", post,
                                                   {"to": a, "message_id": _b64(message_id)}))
        assert observer.status == 403

        told = await ta.client.request("POST", post, {"to": b, "class": "off_the_record"})
        assert told == {"class": "off_the_record", "control_sees": "existence"}
        seen = control(backend, "traffic")
        assert seen["counts"] == {"off_the_record": 1}
        assert [(e["from"], e["to"], e.get("text")) for e in seen["letters"]] == [
            (a, b, "x"), (a, c, None)
        ]
        for each in (ta, tb, _tc, to):
            await each.client.close()
    finally:
        relay.kill()
