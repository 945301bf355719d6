"""Exercise control's HTTP API (issue 18; PROTOCOL.md §16.12): the control page and scripts.

Thin: each handler checks control's credentials (`control_auth.controller`), reads and checks
its body, and calls the same function as the command line (`control.py`). JSON in and out;
`?exercise=NAME` picks the exercise when several are loaded.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from aiohttp import web

from . import control
from .appkeys import CONFIG, EXERCISES, HUB, STORE
from .control_auth import (
    COOKIE,
    SESSION_SECONDS,
    SESSIONS,
    admin_token_ok,
    controller,
    controller_name,
    refuse,
)
from .errors import BadRequest, Unauthorized
from .exercises import Exercises
from .wire import json_body, query_int

control_routes = web.RouteTableDef()
PREFIX = "/v1/control"
MAX_INJECT_NUMBER = 2**31 - 1


async def _exercise(request: web.Request) -> tuple[Exercises, str]:
    exercises = request.app[EXERCISES]
    wanted = request.query.get("exercise")
    if wanted is not None and not 1 <= len(wanted) <= 64:
        raise BadRequest("query parameter 'exercise' must be an exercise's name",
                         code="invalid_query")  # fmt: skip
    return exercises, await exercises.pick(wanted)


def _number(request: web.Request) -> int:
    raw = request.match_info["number"]
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw[:12]) <= MAX_INJECT_NUMBER:
        raise BadRequest("an inject's number is a positive integer", code="invalid_field")
    return int(raw)


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"field {key!r} must be a string", code="invalid_field")
    return value


def scenario_ms(value: Any, key: str) -> int:
    """A scenario time: Unix ms, or ISO 8601 text with its UTC offset."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return int(moment.timestamp() * 1000)
    raise BadRequest(
        f"field {key!r} must be a scenario time: Unix ms, or ISO 8601 with its UTC offset, "
        "like 1962-10-27T09:00:00-04:00", code="invalid_field",
    )  # fmt: skip


# --- sessions -----------------------------------------------------------------------------------


@control_routes.post(f"{PREFIX}/session")
async def create_session(request: web.Request) -> web.Response:
    """Log in with the admin token: a cookie session for the control page (12 h, this
    process's memory: a relay restart ends it)."""
    body = await json_body(request)
    token = body.get("token")
    if not isinstance(token, str) or len(token) > 256 or not admin_token_ok(request, token):
        raise refuse(request, Unauthorized("the admin token is wrong", code="control_auth"))
    name = body.get("name", "control")
    if not isinstance(name, str):
        raise BadRequest("field 'name' must be a string", code="invalid_field")
    cookie, session = request.app[SESSIONS].create(controller_name(name))
    response = web.json_response(
        {"name": session.name, "csrf": session.csrf, "expires_at": int(session.expires_at)},
        status=201,
    )
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", path="/",
                        secure=request.secure, max_age=SESSION_SECONDS)  # fmt: skip
    return response


@control_routes.delete(f"{PREFIX}/session")
async def end_session(request: web.Request) -> web.Response:
    await controller(request, changing=True)
    cookie = request.cookies.get(COOKIE)
    ended = request.app[SESSIONS].end(cookie) if cookie else False
    response = web.json_response({"ended": ended})
    response.del_cookie(COOKIE, path="/")
    return response


# --- views --------------------------------------------------------------------------------------


async def health(request: web.Request) -> dict[str, Any]:
    """What the relay measures of itself: the store's (`control.store_health`) and the live
    connections of this process."""
    measured = await control.store_health(request.app[STORE], request.app[CONFIG].data_dir)
    return {"connections": request.app[HUB].connections(), **measured}


@control_routes.get(f"{PREFIX}/state")
async def state(request: web.Request) -> web.Response:
    await controller(request, changing=False)
    exercises, name = await _exercise(request)
    view = await control.state(exercises, name)
    return web.json_response({**view, "health": await health(request)})


@control_routes.get(f"{PREFIX}/version")
async def version(request: web.Request) -> web.Response:
    await controller(request, changing=False)
    exercises, name = await _exercise(request)
    return web.json_response({"version": await control.version(exercises, name)})


@control_routes.get(f"{PREFIX}/injects")
async def injects(request: web.Request) -> web.Response:
    """The schedule (MSEL), as `exercise injects` prints it."""
    await controller(request, changing=False)
    exercises, name = await _exercise(request)
    return web.json_response({"exercise": name,
                              "injects": await control.injects(exercises, name)})  # fmt: skip


@control_routes.get(f"{PREFIX}/actions")
async def actions(request: web.Request) -> web.Response:
    """The control log, oldest first; `?newest=N` keeps the newest N."""
    await controller(request, changing=False)
    exercises, name = await _exercise(request)
    newest = query_int(request, "newest", control.MAX_ACTIONS, control.MAX_ACTIONS)
    found = await control.actions(exercises, name, newest)
    return web.json_response({"exercise": name, "actions": found})


# --- changes ------------------------------------------------------------------------------------


@control_routes.post(f"{PREFIX}/clock")
async def clock(request: web.Request) -> web.Response:
    by = await controller(request, changing=True)
    exercises, name = await _exercise(request)
    body = await json_body(request)
    change = body.get("action")
    value: float | int | None = None
    if change == "set":
        value = scenario_ms(body.get("time"), "time")
    elif change == "speed":
        speed = body.get("speed")
        if (
            isinstance(speed, bool)
            or not isinstance(speed, int | float)
            or not math.isfinite(speed)
        ):
            raise BadRequest("field 'speed' must be a number", code="invalid_field")
        value = float(speed)
    elif change not in ("pause", "resume"):
        raise BadRequest("field 'action' must be pause, resume, set or speed",
                         code="invalid_field")  # fmt: skip
    assert isinstance(change, str)
    return web.json_response(await control.change_clock(exercises, name, change, value, by))


@control_routes.post(f"{PREFIX}/injects/{{number}}/release")
async def release(request: web.Request) -> web.Response:
    by = await controller(request, changing=True)
    exercises, name = await _exercise(request)
    return web.json_response(await control.release(exercises, name, _number(request), by))


@control_routes.post(f"{PREFIX}/injects/{{number}}/skip")
async def skip(request: web.Request) -> web.Response:
    by = await controller(request, changing=True)
    exercises, name = await _exercise(request)
    return web.json_response(await control.skip(exercises, name, _number(request), by))


@control_routes.patch(f"{PREFIX}/injects/{{number}}")
async def edit(request: web.Request) -> web.Response:
    by = await controller(request, changing=True)
    exercises, name = await _exercise(request)
    number = _number(request)
    body = await json_body(request)
    at = scenario_ms(body["at"], "at") if body.get("at") is not None else None
    title, text = _optional_text(body, "title"), _optional_text(body, "text")
    return web.json_response(await control.edit(exercises, name, number, by, title, text, at))


@control_routes.post(f"{PREFIX}/injects")
async def add(request: web.Request) -> web.Response:
    by = await controller(request, changing=True)
    exercises, name = await _exercise(request)
    body = await json_body(request)
    at = scenario_ms(body.get("at"), "at")
    to = body.get("to")
    if not isinstance(to, list):
        raise BadRequest("field 'to' must be a list of role names or groups",
                         code="invalid_field")  # fmt: skip
    title, text = _optional_text(body, "title"), _optional_text(body, "text")
    added = await control.add(exercises, name, by, at, to, title or "", text or "")
    return web.json_response(added, status=201)


@control_routes.post(f"{PREFIX}/invites")
async def invite(request: web.Request) -> web.Response:
    by = await controller(request, changing=True)
    exercises, name = await _exercise(request)
    body = await json_body(request)
    role = body.get("role")
    if not isinstance(role, str) or not 1 <= len(role) <= 64:
        raise BadRequest("field 'role' must be a role's name", code="invalid_field")
    ttl = request.app[CONFIG].invite_ttl
    made = await control.invite(exercises, name, role, by, ttl)
    return web.json_response(made, status=201)
