"""Property-based requests from the relay's own OpenAPI document (schemathesis): whatever a
client sends, valid or not, the relay answers without a 5xx, and every 4xx is a JSON error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from backchannel_relay.openapi import openapi_document

from .conftest import Relay, join

# The WebSocket upgrade is exercised by the live-delivery tests; every other route is fuzzed.
# Logging out revokes the token it presents: it is fuzzed with a token of its own.
schema = (
    schemathesis.openapi.from_dict(openapi_document())
    .exclude(path="/v1/ws")
    .exclude(path="/v1/auth/logout")
)
logout = schemathesis.openapi.from_dict(openapi_document()).include(path="/v1/auth/logout")


def _logged_in(relay: Relay) -> dict[str, str]:
    async def token() -> str:
        member = await join(relay, "fuzz")
        await member.client.close()
        assert member.client.token is not None
        return member.client.token

    return {"Authorization": f"Bearer {asyncio.run(token())}"}


@pytest.fixture(scope="module")
def auth(relay: Relay) -> dict[str, str]:
    """A logged-in participant's header, so authenticated routes are reached, not just refused."""
    return _logged_in(relay)


@pytest.fixture
def own_auth(relay: Relay) -> dict[str, str]:
    return _logged_in(relay)


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_request_gets_a_server_error(case: Any, relay: Relay, auth: dict[str, str]) -> None:
    response = case.call(base_url=relay.url, headers=auth, timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str)


@logout.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)  # fmt: skip
def test_logging_out_gets_no_server_error(
    case: Any, relay: Relay, own_auth: dict[str, str]
) -> None:
    response = case.call(base_url=relay.url, headers=own_auth, timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
