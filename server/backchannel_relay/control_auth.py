"""Who is exercise control: the admin token, or a browser session made with it (issue 18).

Two credentials open control's routes, never a participant's token:
- `Authorization: Bearer <admin token>`, the controller's name in `X-Backchannel-Controller`
  (default `control`). A script's credential: no cookie, so no cross-site request carries it.
- The `bc_control` cookie of a session made by `POST /v1/control/session` with the admin token
  and a name. A browser sends a cookie with any request, so every changing request on a cookie
  must also carry the session's CSRF token in `X-CSRF-Token` (a page of another site cannot
  read it) and, when the browser says where the request comes from (`Origin`), come from the
  relay's own origin. `SameSite=Strict` is a third fence, not the only one.

Sessions live in this process's memory (at most `MAX_SESSIONS`, `SESSION_SECONDS` each), keyed
by a hash of the cookie: a relay restart ends them, and on several relay processes a session
works on the process that made it (put the processes behind sticky sessions, or use the
bearer token).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import time
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from .appkeys import ADMIN_TOKEN_HASH, CLIENT, PUBLIC_LIMITER, STORE
from .errors import BadRequest, Forbidden, Unauthorized
from .store import digest

COOKIE = "bc_control"
CSRF_HEADER = "X-CSRF-Token"
NAME_HEADER = "X-Backchannel-Controller"
DEFAULT_NAME = "control"
MAX_SESSIONS = 256
SESSION_SECONDS = 12 * 3600
FAILURE_COST = 5.0
"""What a refused credential costs the caller's address (as `app.FAILURE_COST`)."""


@dataclass(frozen=True, slots=True)
class ControlSession:
    name: str
    csrf: str
    expires_at: float
    """Wall time, Unix seconds."""


class ControlSessions:
    """Cookie hash -> session; the least recently used goes first when full."""

    def __init__(self, limit: int = MAX_SESSIONS, life: float = SESSION_SECONDS) -> None:
        self.limit = limit
        self.life = life
        self._sessions: OrderedDict[bytes, ControlSession] = OrderedDict()

    def create(self, name: str) -> tuple[str, ControlSession]:
        """A new session; -> (cookie value, session)."""
        cookie = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        csrf = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        session = ControlSession(name, csrf, time.time() + self.life)
        self._sessions[digest(cookie.encode())] = session
        while len(self._sessions) > self.limit:
            self._sessions.popitem(last=False)
        return cookie, session

    def get(self, cookie: str) -> ControlSession | None:
        key = digest(cookie.encode())
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires_at < time.time():
            del self._sessions[key]
            return None
        self._sessions.move_to_end(key)
        return session

    def end(self, cookie: str) -> bool:
        return self._sessions.pop(digest(cookie.encode()), None) is not None


SESSIONS = web.AppKey("control_sessions", ControlSessions)


def controller_name(value: str | None, default: str = DEFAULT_NAME) -> str:
    """1 to 64 printable characters, as the log shows them."""
    if value is None:
        return default
    name = value.strip()
    if not 1 <= len(name) <= 64 or not name.isprintable():
        raise BadRequest("the controller's name must be 1 to 64 printable characters",
                         code="invalid_field")  # fmt: skip
    return name


def admin_token_ok(request: web.Request, presented: str) -> bool:
    data = presented.strip().encode()
    return bool(data) and hmac.compare_digest(digest(data), request.app[ADMIN_TOKEN_HASH])


def refuse(request: web.Request, error: Unauthorized | Forbidden) -> Unauthorized | Forbidden:
    """The error, after charging the caller's address for the failed attempt."""
    address = request.get(CLIENT)
    if address is not None:
        request.app[PUBLIC_LIMITER].spend(address, FAILURE_COST)
    return error


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def controller(request: web.Request, *, changing: bool) -> str:
    """The acting controller's name, or 401 `control_auth` / 403 `not_control` / 403 `csrf`."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        presented = header[7:]
        if admin_token_ok(request, presented):
            return controller_name(request.headers.get(NAME_HEADER))
        if await _participant_token(request, presented):
            raise refuse(
                request,
                Forbidden(
                    "a participant's token does not open exercise control; use the admin token",
                    code="not_control",
                ),
            )
        raise refuse(request, Unauthorized("the admin token is wrong", code="control_auth"))
    cookie = request.cookies.get(COOKIE)
    session = request.app[SESSIONS].get(cookie) if cookie else None
    if session is None:
        raise refuse(request, Unauthorized(
            "exercise control needs the admin token ('Authorization: Bearer ...') or a control "
            "session (POST /v1/control/session)", code="control_auth",
        ))  # fmt: skip
    if changing:
        sent = request.headers.get(CSRF_HEADER, "")
        origin = request.headers.get("Origin")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise refuse(request, Forbidden(f"a change needs the session's {CSRF_HEADER} header",
                                            code="csrf"))  # fmt: skip
        if origin is not None and origin != own_origin(request):
            raise refuse(request, Forbidden("a change must come from the relay's own page",
                                            code="csrf"))  # fmt: skip
    return session.name


async def _participant_token(request: web.Request, presented: str) -> bool:
    """Whether `presented` is a live participant session token (to say so in the refusal)."""
    try:
        token = base64.b64decode(presented.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    store = request.app[STORE]
    if store.cached_participant(token) is not None:
        return True
    return await store.participant_for_token(token) is not None
