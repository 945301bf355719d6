"""Requests that made the relay answer 500 before the decoder fuzzing (`tests/fuzz`) found them:
now each is a 4xx with a JSON error, on both backends."""

from __future__ import annotations

import base64
import os

import aiohttp
import pytest

from backchannel.relay_auth import sign_login

from .conftest import Member, Relay


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
async def test_a_login_with_a_challenge_of_the_wrong_size_is_a_bad_proof(
    relay: Relay, members: list[Member], size: int
) -> None:
    """The challenge is hashed into the signed statement at its fixed size (32 bytes); any other
    size cannot have been issued, and was the encoder's ValueError (a 500)."""
    alice = members[0]
    challenge = os.urandom(size)
    body = {
        "name": alice.name,
        "challenge": base64.b64encode(challenge).decode(),
        "signature": base64.b64encode(
            sign_login(alice.identity, bytes(16), bytes(32), "x")
        ).decode(),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(relay.url + "/v1/auth/token", json=body) as response,
    ):
        answer = await response.json(content_type=None)
    assert (response.status, answer["error"]) == (401, "bad_proof"), answer
    assert answer["message"]
