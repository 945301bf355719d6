"""The application factory: shared objects, middlewares and background work.

Middlewares do what every handler would otherwise repeat: render errors as JSON, authenticate,
rate-limit, and count requests under their route template (never a name). Cleanup contexts open
and close the database, the group committer and the expiry sweeper.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from sqlalchemy.exc import SQLAlchemyError

from backchannel.keys import SigningKeyPair

from .access import BundleGuard
from .appkeys import (
    ADMIN_TOKEN_HASH,
    BODY_BUDGET,
    BODY_HELD,
    BUNDLES,
    CLIENT,
    CLIENT_ADDRESSES,
    COMMITTER,
    CONFIG,
    DROPS,
    EXERCISES,
    GATE,
    HUB,
    LIMITER,
    METRICS,
    NOTARY,
    PARTICIPANT,
    PUBLIC_LIMITER,
    READ_LIMITER,
    RELAY_ID,
    SEND_LIMITER,
    SOCKETS,
    STORE,
)
from .config import RelayConfig
from .control_api import control_routes
from .control_auth import SESSIONS, ControlSessions
from .control_page import add_control_page
from .database import (
    commit_durability,
    commit_settings,
    is_sqlite,
    migrate,
    open_engine,
    private_data_dir,
    store_error,
)
from .delivery import GroupCommitter, Hub, MailboxFeed, Sockets
from .drops import Drops
from .errors import RelayError, StoreUnavailable, TooManyRequests, Unauthorized
from .exercises import Exercises
from .limits import (
    BodyBudget,
    ClientAddresses,
    ConnectionGate,
    RateLimiter,
    SharedBudget,
    SharedRateLimiter,
)
from .metrics import Metrics
from .notary import Notary
from .routes import MAILBOX_READS, PUBLIC, SEALED, SENDS, SILENT, routes
from .store import ParticipantInfo, Store, digest
from .wakeups import Listener, origin_token
from .wire import body_limits, check_declared_size

log = logging.getLogger("backchannel_relay")
Handler = Callable[[web.Request], Awaitable[StreamResponse]]
ADMIN_TOKEN_KEY = "admin_token_hash"
SOCKET_CLOSE_GRACE = 0.5
"""Seconds a client has, when the relay stops, to answer its WebSocket's close (then it is cut)."""
SHUTDOWN_TIMEOUT = 1.0
"""Seconds requests still running when the relay stops may take to finish (then they are
cancelled). With the grace above, a stopping relay is gone within 2 s."""


def route_template(request: BaseRequest) -> str:
    """`/v1/prekeys/{name}`, not `/v1/prekeys/khrushchev`: what logs and metrics may show."""
    match = getattr(request, "match_info", None)
    route = getattr(match, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


class TemplateAccessLogger(AbstractAccessLogger):
    """One line per request: method, route template, status, size, time. No names, no query.
    Off-the-record traffic (the drop routes) leaves no line at all."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if route_template(request) in SILENT:
            return
        self.logger.info(
            "%s %s %s %s %.1fms",
            request.method,
            route_template(request),
            response.status,
            response.body_length,
            time * 1000,
        )


def _error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> web.Response:
    body = {**(extra or {}), "error": code, "message": message}
    return web.json_response(body, status=status, headers=headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> StreamResponse:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = 500
    gate = request.app[GATE]
    entered = False
    try:
        gate.enter()
        entered = True
        response = await handler(request)
        status = response.status
        return response
    except RelayError as exc:
        status = exc.status
        retry = str(max(1, round(exc.retry_after)))
        headers = {"Retry-After": retry} if exc.retry_after else None
        response = _error_response(exc.status, exc.code, exc.message, headers, extra=exc.extra)
        if exc.status in (408, 413):  # the rest of the body is not wanted: close after answering
            response.force_close()
        return response
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return _error_response(exc.status, code, exc.reason)
    except Exception as exc:
        if route_template(request) not in SILENT:  # off the record: not even a failure is noted
            log.error("internal error on %s: %s", route_template(request), type(exc).__name__)
        return _error_response(500, "internal_error", "the relay failed; nothing was lost")
    finally:
        if entered:
            gate.leave()
        if BODY_HELD in request:
            request.app[BODY_BUDGET].release(*request[BODY_HELD])
        template = route_template(request)
        if template not in SILENT:  # off the record: not even counted
            metrics.requests.labels(template, str(status)).inc()
            metrics.latency.labels(template).observe(time.perf_counter() - started)


FAILURE_COST = 5.0
"""Tokens of the per-address limit that a refused request costs on top (a wrong token, name,
invite, challenge or body): guessing is slow, and a classroom behind one address still has
dozens of mistakes in a burst beside its forty registrations and logins."""
UNLIMITED = {"/healthz", "/metrics", "/openapi.json", "/v1/info"}
"""Monitoring and constant documents: never refused by the per-address limit."""
UNCOUNTED = SEALED
"""Refused when their address has run out, but only a failure spends: drops are limited per
drop (`drops.py`), so polling them costs the address nothing."""
CONTROL = ("/v1/control/", "/control")
"""Exercise control's routes (issue 18): control's own credentials (`control_auth.py`), never a
participant's; like sealed routes, refused when their address has run out, and a refused
credential spends (`control_auth.refuse`)."""


def _charge_failure(request: web.Request, address: str, status: int) -> None:
    if 400 <= status < 500 and status != 429:
        request.app[PUBLIC_LIMITER].spend(address, FAILURE_COST)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> StreamResponse:
    """Per-address limit for strangers, then the session token, then the per-identity limits.

    The address (the peer's, or from a trusted proxy's `X-Forwarded-For`) is used here, in
    memory, and nowhere else: no log line or metric names it.
    """
    template = route_template(request)
    if template in UNLIMITED:
        return await handler(request)
    limiter = request.app[PUBLIC_LIMITER]
    address = request.app[CLIENT_ADDRESSES].key(
        request.remote, request.headers.getall("X-Forwarded-For", [])
    )
    request[CLIENT] = address
    if template.startswith(CONTROL):
        limiter.check(address)
        check_declared_size(request)
        return await handler(request)
    if template in PUBLIC or request.match_info.http_exception is not None:
        try:
            if template in UNCOUNTED or request.match_info.http_exception is not None:
                limiter.check(address)
            else:
                limiter.take(address)
            check_declared_size(request)
            return await handler(request)
        except (RelayError, web.HTTPException) as exc:
            _charge_failure(request, address, exc.status)
            raise
    try:
        who = await _authenticate(request, address)
    except RelayError as exc:
        _charge_failure(request, address, exc.status)
        raise
    check_declared_size(request)
    if route_template(request) in SILENT:  # opening a drop leaves no trace, not even a bucket
        request.app[PUBLIC_LIMITER].take(("drop", who.id))
    elif (request.method, route_template(request)) in MAILBOX_READS:  # never the send budget
        await request.app[READ_LIMITER].take_async(who.id)
    elif (request.method, route_template(request)) in SENDS:  # they pay per envelope, but
        try:  # an empty budget is refused before the body is read, let alone parsed
            request.app[SEND_LIMITER].check(who.id)
        except TooManyRequests as exc:
            raise TooManyRequests("too many envelopes sent; slow down",
                                  retry_after=exc.retry_after, code="send_rate_limited") from None
    else:
        await request.app[LIMITER].take_async(who.id)
    request[PARTICIPANT] = who
    return await handler(request)


async def _authenticate(request: web.Request, address: str) -> ParticipantInfo:
    """The bearer token's participant. A token this process has not seen answered costs a
    lookup in the store, so it is first checked against the address's limit: an address
    that keeps presenting made-up tokens is refused, and a participant whose token is known
    (even when it is due for its periodic re-check) never meets that limit."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Unauthorized("this request needs 'Authorization: Bearer <token>'", code="no_token")
    try:
        token = base64.b64decode(header[7:].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized("the session token is malformed", code="bad_token") from None
    store = request.app[STORE]
    who = store.cached_participant(token)
    if who is None:
        if not store.known_token(token):  # a re-check of a known token is no stranger's guess
            request.app[PUBLIC_LIMITER].check(address)
        who = await store.participant_for_token(token)
    if who is None:
        raise Unauthorized("the session token is unknown or expired", code="bad_token")
    return who


LINGERING_SECONDS = 2.0
"""After answering a request whose body was not read (refused early, too large, too slow),
how long the relay still reads and discards what the client is sending before it closes."""


def create_app(config: RelayConfig) -> web.Application:
    app = web.Application(
        client_max_size=max(config.max_body_bytes, *body_limits(config).values()),
        middlewares=[errors_middleware, auth_middleware],
        handler_args={"lingering_time": LINGERING_SECONDS},
    )
    app[CONFIG] = config
    app[CLIENT_ADDRESSES] = ClientAddresses(config.trusted_proxies)
    app[BODY_BUDGET] = BodyBudget(
        config.body_memory, max(config.max_send_body_bytes, config.body_memory // 8)
    )
    app[METRICS] = Metrics()
    app[HUB] = Hub()
    app[SOCKETS] = Sockets()
    app[LIMITER] = RateLimiter(config.rate)
    app[SEND_LIMITER] = RateLimiter(config.send_rate)
    app[READ_LIMITER] = RateLimiter(config.read_rate)
    app[PUBLIC_LIMITER] = RateLimiter(config.public_rate, config.max_rate_keys)
    app[GATE] = ConnectionGate(config.max_connections)
    app[BUNDLES] = BundleGuard(config.bundles)
    app.add_routes(routes)
    app.add_routes(control_routes)
    app[SESSIONS] = ControlSessions()
    add_control_page(app)
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_group_commit)
    app.cleanup_ctx.append(_cross_process_wakeups)
    app.cleanup_ctx.append(_sweeper)
    return app


async def _close_sockets(app: web.Application) -> None:
    """Stopping: every WebSocket is closed as going away (1001), so that neither the relay
    waits for its handlers nor the clients take it for a failure."""
    await app[SOCKETS].close_all(SOCKET_CLOSE_GRACE)


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    engine = None
    try:
        if config.database_url is None:
            private_data_dir(config.data_dir)
        engine = open_engine(config.url)
        if not is_sqlite(engine):  # a receipt promises the sync: refuse a server that skips it
            refused, warning = commit_durability(
                await commit_settings(engine), config.allow_unsafe_commit
            )
            if warning is not None:
                log.warning("warning: %s", warning)
            if refused is not None:
                await engine.dispose()
                raise StoreUnavailable(f"refusing to start: {refused}")
        await migrate(engine)
    except (OSError, SQLAlchemyError) as exc:
        if engine is not None:
            await engine.dispose()
        raise StoreUnavailable(
            f"cannot open the {config.describe_store()}: {store_error(exc)}"
        ) from None
    store = Store(engine, config.limits)
    await store.load_keys()
    if not is_sqlite(engine):  # several processes may serve this database: one limit for all
        app[LIMITER] = SharedRateLimiter(config.rate, engine)
        app[SEND_LIMITER] = SharedBudget("send", config.send_rate, engine)
        app[READ_LIMITER] = SharedBudget("read", config.read_rate, engine)
    app[STORE] = store
    app[RELAY_ID], _ = await store.meta_secret("relay_id", 16)
    notary_key, _ = await store.meta_secret("notary_key", 32)
    app[NOTARY] = Notary(store, SigningKeyPair.from_private_bytes(notary_key), app[RELAY_ID])
    app[DROPS] = Drops(store, config.drops)
    control_key, _ = await store.meta_secret("control_key", 32)
    app[EXERCISES] = Exercises(store, SigningKeyPair.from_private_bytes(control_key))
    app[ADMIN_TOKEN_HASH] = await ensure_admin_token(store)
    yield
    await asyncio.get_running_loop().run_in_executor(None, store.close)
    await engine.dispose()


async def ensure_admin_token(store: Store) -> bytes:
    """Create the admin token on first start; it is shown once and only its hash is kept. Of
    relay processes starting together on a fresh database, the one whose insert won shows it."""
    stored = await store.get_meta(ADMIN_TOKEN_KEY)
    if stored is not None:
        return stored
    token = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
    kept, ours = await store.meta_once(ADMIN_TOKEN_KEY, digest(token.encode()))
    if ours:
        print(f"Admin token (shown once; keep it to create invites over HTTP): {token}", flush=True)
    else:
        print(
            "The admin token was made by another relay process starting at the same time; "
            "it is in that process's output.",
            flush=True,
        )
    return kept


async def _group_commit(app: web.Application) -> AsyncIterator[None]:
    committer = GroupCommitter(app[STORE], app[HUB])
    committer.start()
    app[COMMITTER] = committer
    yield
    await committer.stop()


async def _cross_process_wakeups(app: web.Application) -> AsyncIterator[None]:
    """On PostgreSQL, wake this process's sockets for sends accepted by other processes."""
    store = app[STORE]
    if store.engine.dialect.name != "postgresql":
        yield
        return
    origin = origin_token()
    feed = MailboxFeed(store, app[HUB])
    feed.start()
    listener = Listener(app[CONFIG].url, app[HUB], origin)
    listener.start()
    with contextlib.suppress(TimeoutError):  # it keeps trying; the store stays the truth
        await asyncio.wait_for(listener.connected.wait(), 10)
    store.wake_origin = origin
    yield
    store.wake_origin = None
    await listener.stop()
    await feed.stop()


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(app[CONFIG].sweep_interval)
            try:
                await app[STORE].sweep_expired()
                await app[DROPS].sweep()
            except Exception as exc:  # keep sweeping; the next round retries
                log.error("sweep failed: %s", type(exc).__name__)

    task = asyncio.create_task(sweep_forever(), name="sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
