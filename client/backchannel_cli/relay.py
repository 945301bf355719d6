"""An asyncio client for the relay's HTTP+WebSocket API (PROTOCOL.md §13).

It speaks JSON and base64 and turns every relay error into `RelayRequestError` carrying the
relay's code and message, so callers (the CLI, tests, the benchmark) never parse bodies twice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from backchannel.identity import IdentityKeyPair
from backchannel.prekeys import KemPrekey, OneTimePrekey, SignedPrekey
from backchannel.relay_auth import sign_login, sign_registration


class RelayRequestError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.body = body or {}
        """The whole error body: some refusals carry more (the notary's `winner`)."""


class RelayUnreachable(Exception):
    pass


GOING_AWAY = 1001
"""The WebSocket close code of a relay that is shutting down (RFC 6455 §7.4.1)."""
SLOW_DOWN_WAIT_MAX = 30.0
"""The longest a request waits on one 429 before trying again. A relay asking for longer is
not waited for: the refusal goes to the caller, whose outbox keeps what it was sending."""
SLOW_DOWN_TOTAL_MAX = 60.0
"""The longest one request of the CLI waits over all its 429s (its `patience`)."""
SLOW_DOWN_NOTICE_AFTER = 2.0
"""Waits longer than this are told to the user (`on_slow_down`); shorter ones pass unnoticed."""


def slow_down_notice(wait: float) -> None:
    """One line on standard error while a request waits out a 429."""
    print(
        f"the relay asks us to slow down; retrying in {math.ceil(wait)} s",
        file=sys.stderr,
        flush=True,
    )


def slow_down_wait(
    error: RelayRequestError,
    waited: float,
    patience: float,
    jitter: Callable[[], float] = random.random,
) -> float | None:
    """How long to wait before trying a refused request again, or None not to: only a 429
    that says when (Retry-After), at most `SLOW_DOWN_WAIT_MAX` at a time and `patience` in
    all. A little jitter keeps clients refused together from coming back together."""
    if error.status != 429 or error.retry_after is None:
        return None
    wait = max(0.0, error.retry_after) + 0.25 * jitter()
    if error.retry_after > SLOW_DOWN_WAIT_MAX or waited + wait > patience:
        return None
    return wait


def unreachable(base_url: str, exc: BaseException) -> RelayUnreachable:
    """`cannot reach the relay at URL: WHY`, in words rather than aiohttp's internals."""
    return RelayUnreachable(f"cannot reach the relay at {base_url}: {_why(exc)}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "its TLS certificate is not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name is not known"
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is it running?)"
        if isinstance(cause, TimeoutError):
            return "no answer in time"
        return (cause.strerror or "cannot connect").lower()
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
        return "no answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "the connection failed"


def _retry_after(header: str | None) -> float | None:
    """Retry-After in seconds; None if absent or not a number of seconds (an HTTP date from
    some proxy is treated as no advice)."""
    try:
        seconds = float(header) if header else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _encoded(prekey: SignedPrekey | OneTimePrekey | KemPrekey) -> str:
    from backchannel.encoding import Writer

    writer = Writer()
    prekey.write(writer)
    return b64(bytes(writer))


@dataclass(frozen=True, slots=True)
class PushedEnvelope:
    id: int
    received_at: int
    envelope: bytes


class RelayClient:
    """One participant's (or an anonymous) connection to one relay."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession | None = None,
        patience: float = 0.0,
        on_slow_down: Callable[[float], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self.patience = patience
        """Seconds one request may spend waiting out 429s (0: a 429 is the caller's at once,
        as tests and the benchmark want; the CLI waits up to `SLOW_DOWN_TOTAL_MAX`)."""
        self.on_slow_down = on_slow_down
        """Told each wait on a 429 longer than `SLOW_DOWN_NOTICE_AFTER` seconds."""
        self._owns_session = session is None
        self.token: str | None = None
        self.close_code: int | None = None
        """How the relay last closed the live WebSocket (`GOING_AWAY` when shutting down)."""

    async def __aenter__(self) -> RelayClient:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        anonymous: bool = False,
    ) -> Any:
        """`anonymous`: without the session token even when logged in (sealed sender).

        A 429 with Retry-After is waited out and the request tried again (`slow_down_wait`);
        nothing was done by the refused attempt, so trying again is safe."""
        waited = 0.0
        while True:
            try:
                return await self._request_once(method, path, body, params, anonymous)
            except RelayRequestError as exc:
                wait = slow_down_wait(exc, waited, self.patience)
                if wait is None:
                    raise
            if wait > SLOW_DOWN_NOTICE_AFTER and self.on_slow_down is not None:
                self.on_slow_down(wait)
            await asyncio.sleep(wait)
            waited += wait

    async def _request_once(
        self,
        method: str,
        path: str,
        body: Any,
        params: dict[str, str] | None,
        anonymous: bool,
    ) -> Any:
        headers = {} if anonymous else self._headers()
        try:
            async with self.session.request(
                method, self.base_url + path, json=body, params=params, headers=headers
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    error: dict[str, Any] = {}
                    try:
                        error = json.loads(text)
                        code, message = error["error"], error["message"]
                    except (ValueError, KeyError, TypeError):
                        code, message = "http_error", text[:200] or response.reason or ""
                    raise RelayRequestError(
                        response.status,
                        code,
                        message,
                        _retry_after(response.headers.get("Retry-After")),
                        error if isinstance(error, dict) else None,
                    )
                return json.loads(text) if text else None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise unreachable(self.base_url, exc) from None
        except aiohttp.InvalidURL:
            raise RelayUnreachable(f"the relay URL {self.base_url!r} is not valid") from None

    # --- public ---------------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self.request("GET", "/v1/info")
        return info

    async def relay_id(self) -> bytes:
        return unb64((await self.info())["relay_id"])

    async def register(
        self,
        identity: IdentityKeyPair,
        name: str,
        invite: str,
        signed_prekey: SignedPrekey,
        kem_last_resort: KemPrekey,
        one_time: Sequence[OneTimePrekey] = (),
        kem_one_time: Sequence[KemPrekey] = (),
    ) -> dict[str, Any]:
        relay_id = await self.relay_id()
        result: dict[str, Any] = await self.request(
            "POST",
            "/v1/register",
            {
                "invite": invite,
                "name": name,
                "identity": b64(identity.public.to_bytes()),
                "proof": b64(sign_registration(identity, relay_id, invite, name)),
                "signed_prekey": _encoded(signed_prekey),
                "kem_last_resort": _encoded(kem_last_resort),
                "one_time_prekeys": [_encoded(p) for p in one_time],
                "kem_prekeys": [_encoded(p) for p in kem_one_time],
            },
        )
        return result

    async def login(self, identity: IdentityKeyPair, name: str) -> str:
        """Challenge, sign, exchange for a session token; keeps the token for later calls."""
        relay_id = await self.relay_id()
        challenge = unb64(
            (await self.request("POST", "/v1/auth/challenge", {"name": name}))["challenge"]
        )
        answer = await self.request(
            "POST",
            "/v1/auth/token",
            {
                "name": name,
                "challenge": b64(challenge),
                "signature": b64(sign_login(identity, relay_id, challenge, name)),
            },
        )
        self.token = answer["token"]
        return str(self.token)

    async def logout(self) -> None:
        """Revoke the session token at the relay (PROTOCOL.md §13.3), and forget it."""
        try:
            if self.token:
                await self.request("POST", "/v1/auth/logout", {})
        finally:
            self.token = None

    # --- authenticated ---------------------------------------------------------------------------

    async def directory(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self.request("GET", "/v1/directory"))["participants"]
        return result

    async def fetch_bundle(self, name: str) -> tuple[bytes, int]:
        answer = await self.request("GET", f"/v1/prekeys/{name}")
        return unb64(answer["bundle"]), int(answer["one_time_prekeys_left"])

    async def prekey_counts(self) -> dict[str, int]:
        counts: dict[str, int] = await self.request("GET", "/v1/prekeys")
        return counts

    async def upload_prekeys(
        self,
        one_time: Sequence[OneTimePrekey] = (),
        kem_one_time: Sequence[KemPrekey] = (),
        signed_prekey: SignedPrekey | None = None,
        kem_last_resort: KemPrekey | None = None,
    ) -> dict[str, int]:
        body: dict[str, Any] = {
            "one_time_prekeys": [_encoded(p) for p in one_time],
            "kem_prekeys": [_encoded(p) for p in kem_one_time],
        }
        if signed_prekey is not None:
            body["signed_prekey"] = _encoded(signed_prekey)
        if kem_last_resort is not None:
            body["kem_last_resort"] = _encoded(kem_last_resort)
        counts: dict[str, int] = await self.request("POST", "/v1/prekeys", body)
        return counts

    async def send(self, envelopes: Sequence[bytes]) -> list[dict[str, Any]]:
        answer = await self.request(
            "POST", "/v1/messages", {"envelopes": [b64(e) for e in envelopes]}
        )
        receipts: list[dict[str, Any]] = answer["receipts"]
        return receipts

    async def mailbox(self, after: int = 0, limit: int = 100) -> tuple[list[PushedEnvelope], bool]:
        answer = await self.request(
            "GET", "/v1/messages", params={"after": str(after), "limit": str(limit)}
        )
        page = [
            PushedEnvelope(e["id"], e["received_at"], unb64(e["envelope"]))
            for e in answer["envelopes"]
        ]
        return page, bool(answer["more"])

    async def acknowledge(self, ids: Sequence[int]) -> int:
        answer = await self.request("POST", "/v1/messages/ack", {"ids": list(ids)})
        return int(answer["acknowledged"])

    # --- drops: sealed sender (PROTOCOL.md §15.3) ----------------------------------------------

    async def create_drop(self, address: bytes, read_hash: bytes, expires_at: int) -> int:
        body = {"address": b64(address), "read_hash": b64(read_hash), "expires_at": expires_at}
        return int((await self.request("POST", "/v1/drops", body))["expires_at"])

    async def drop_send(self, token: bytes, envelope: bytes) -> bool:
        """-> whether the relay held it already. No session token goes with it."""
        body = {"token": b64(token), "envelope": b64(envelope)}
        answer = await self.request("POST", "/v1/drops/send", body, anonymous=True)
        return bool(answer["duplicate"])

    async def drop_fetch(
        self, read_key: bytes, after: int = 0, limit: int = 100
    ) -> tuple[list[PushedEnvelope], bool, int]:
        """-> (messages with id > after, more?, the drop's expiry)."""
        body = {"read_key": b64(read_key), "after": after, "limit": limit}
        answer = await self.request("POST", "/v1/drops/fetch", body, anonymous=True)
        page = [PushedEnvelope(m["id"], 0, unb64(m["envelope"])) for m in answer["messages"]]
        return page, bool(answer["more"]), int(answer["expires_at"])

    async def drop_ack(self, read_key: bytes, ids: Sequence[int]) -> int:
        body = {"read_key": b64(read_key), "ids": list(ids)}
        return int(
            (await self.request("POST", "/v1/drops/ack", body, anonymous=True))["acknowledged"]
        )

    async def drop_close(self, read_key: bytes) -> None:
        await self.request("POST", "/v1/drops/close", {"read_key": b64(read_key)}, anonymous=True)

    async def live(
        self, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[tuple[PushedEnvelope, aiohttp.ClientWebSocketResponse]]:
        """Yield each pushed envelope with the socket (to send acks on it); `on_open` is called
        once the relay has accepted the connection; `close_code` says how it ended."""
        self.close_code = None
        try:
            async with self.session.ws_connect(
                self.base_url + "/v1/ws", headers=self._headers(), heartbeat=30
            ) as ws:
                if on_open is not None:
                    on_open()
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    frame = json.loads(message.data)
                    if frame.get("type") == "envelope":
                        yield (
                            PushedEnvelope(
                                frame["id"], frame["received_at"], unb64(frame["envelope"])
                            ),
                            ws,
                        )
                self.close_code = ws.close_code
        except aiohttp.WSServerHandshakeError as exc:
            raise RelayRequestError(exc.status, "websocket_refused", exc.message) from None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise unreachable(self.base_url, exc) from None
        except aiohttp.InvalidURL:
            raise RelayUnreachable(f"the relay URL {self.base_url!r} is not valid") from None


async def ack_on_socket(ws: aiohttp.ClientWebSocketResponse, ids: Sequence[int]) -> None:
    await ws.send_json({"type": "ack", "ids": list(ids)})
