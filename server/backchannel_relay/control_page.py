"""The control room page (`GET /control`) and its live channel (`GET /v1/control/events`).

The page is a view of the control API (`control_api.py`), not a second implementation: a static
HTML shell, one script and one stylesheet, packaged with the relay (no CDN: it works on a laptop
with no internet) and served with a Content-Security-Policy that allows no inline script or
style, so text a participant or a scenario wrote can never run as code even if it reached markup.

The live channel is server-sent events: the current version at once and whenever it changes,
read from the store about every second (so a change made through another relay process sharing
PostgreSQL shows too); the page then fetches `GET /v1/control/state`. A comment every 15 s keeps
proxies from closing a quiet stream. At most `MAX_STREAMS` streams per relay process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from . import control
from .appkeys import EXERCISES
from .control_auth import controller
from .errors import NotFound, RelayError, TooManyRequests

page_routes = web.RouteTableDef()
MAX_STREAMS = 32
"""Live streams one relay process keeps open at once (each holds a connection and polls)."""
POLL_SECONDS = 1.0
"""How often a stream reads the version from the store."""
HEARTBEAT_SECONDS = 15.0
"""A comment line after this long without an event, so that idle proxies keep the stream."""
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ASSETS = {
    "control.js": "text/javascript",
    "control.css": "text/css",
}
"""The only files under `/control/static/`: a fixed list, so no path ever reaches the disk."""


@functools.cache
def _asset(name: str) -> bytes:
    """A packaged file of the page (three of them, read once)."""
    return (resources.files(__package__) / "static" / name).read_bytes()


class Streams:
    """The live streams open in this process, at most `limit`."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        self.limit = limit
        self.open = 0
        self.stopping = asyncio.Event()
        """Set when the relay stops: every stream ends at once, not at the shutdown timeout."""

    async def pause(self) -> bool:
        """Wait one poll; False when the relay is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), POLL_SECONDS)
        return not self.stopping.is_set()

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self.open >= self.limit:
            raise TooManyRequests(
                f"at most {self.limit} live control streams per relay process; close one",
                retry_after=5,
                code="too_many_streams",
            )
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


STREAMS = web.AppKey("control_streams", Streams)


def add_control_page(app: web.Application) -> None:
    """Register the page, its assets and the live channel on the relay's app."""
    app[STREAMS] = Streams()
    app.add_routes(page_routes)
    app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    app[STREAMS].stopping.set()


@page_routes.get("/control")
async def control_page(request: web.Request) -> web.Response:
    """The HTML shell; its script shows the login form until a session is made."""
    return web.Response(
        body=_asset("control.html"), content_type="text/html", charset="utf-8",
        headers=SECURITY_HEADERS,
    )  # fmt: skip


@page_routes.get("/control/static/{name}")
async def control_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound("no such file of the control page", code="not_found")
    return web.Response(
        body=_asset(name), content_type=ASSETS[name], charset="utf-8", headers=SECURITY_HEADERS
    )


async def _version(request: web.Request, exercise: str) -> int:
    """The control state's version, read from the store (what `GET /v1/control/version` says)."""
    return await control.version(request.app[EXERCISES], exercise)


def _event(version: int) -> bytes:
    return f"event: version\ndata: {json.dumps({'version': version})}\n\n".encode()


@page_routes.get("/v1/control/events")
async def control_events(request: web.Request) -> web.StreamResponse:
    """`text/event-stream` of the state's version; ends when the session does."""
    await controller(request, changing=False)
    exercise = await request.app[EXERCISES].pick(request.query.get("exercise"))
    version = await _version(request, exercise)
    streams = request.app[STREAMS]
    with streams.admit():
        headers = {**SECURITY_HEADERS, "Content-Type": "text/event-stream"}
        response = web.StreamResponse(headers={**headers, "X-Accel-Buffering": "no"})
        await response.prepare(request)
        sent: int | None = None
        written = time.monotonic()
        with contextlib.suppress(ConnectionError):
            while request.transport is not None and not request.transport.is_closing():
                if version != sent:
                    await response.write(_event(version))
                    sent, written = version, time.monotonic()
                elif time.monotonic() - written >= HEARTBEAT_SECONDS:
                    await response.write(b": still here\n\n")
                    written = time.monotonic()
                if not await streams.pause():
                    break
                try:
                    await controller(request, changing=False)  # logged out, expired: the end
                except RelayError:
                    break
                with contextlib.suppress(RelayError, SQLAlchemyError, OSError):  # next round
                    version = await _version(request, exercise)
        return response


def page_paths() -> dict[str, Any]:
    """The OpenAPI paths of the page, its assets and the live channel (merged by `openapi`)."""
    from .control_openapi import AUTH_REFUSED, CONTROL_SECURITY, EXERCISE_PARAM
    from .openapi_parts import _refused

    def text(kind: str, description: str) -> dict[str, Any]:
        return {"200": {"description": description,
                        "content": {kind: {"schema": {"type": "string"}}}}}  # fmt: skip

    return {
        "/control": {"get": {
            "summary": "The control room page (HTML; its script logs in with the admin token). "
                       "Content-Security-Policy: no inline script or style",
            "responses": text("text/html", "The page"), "security": [],
        }},
        "/control/static/{name}": {"get": {
            "summary": "The control page's script and stylesheet (packaged with the relay)",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": sorted(ASSETS)}}],
            "responses": {**text("text/plain", "The file (text/javascript or text/css)"),
                          **_refused(404, "not_found: no such file")},
            "security": [],
        }},
        "/v1/control/events": {"get": {
            "summary": "Server-sent events: `event: version` with `{\"version\"}` at once and "
                       "whenever the state's version changes (read from the store every "
                       "second), a comment every 15 s; ends with the session",
            "parameters": [EXERCISE_PARAM],
            "responses": {
                **text("text/event-stream", "The stream"),
                **AUTH_REFUSED,
                **_refused(400, "which_exercise: none or several loaded, name one"),
                **_refused(404, "unknown_exercise"),
                **_refused(429, f"too_many_streams: {MAX_STREAMS} open in this relay "
                                "process already; rate_limited"),
            },
            "security": CONTROL_SECURITY,
        }},
    }  # fmt: skip
