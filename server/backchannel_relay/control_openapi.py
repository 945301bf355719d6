"""The OpenAPI paths of exercise control's API (`control_api.py`, PROTOCOL.md §16.12), merged
into the relay's document by `openapi.openapi_document`."""

from __future__ import annotations

from typing import Any

from .openapi_parts import INT, NAME, _body, _errors, _obj, _ok, _refused

CONTROL_SECURITY: list[dict[str, list[str]]] = [{"admin": []}, {"control_cookie": []}]
SECURITY_SCHEMES = {
    "admin": {"type": "http", "scheme": "bearer",
              "description": "The admin token; the controller's name in "
                             "X-Backchannel-Controller (default control)"},
    "control_cookie": {"type": "apiKey", "in": "cookie", "name": "bc_control",
                       "description": "A control session (POST /v1/control/session); every "
                                      "change also needs X-CSRF-Token and, if sent, the "
                                      "relay's own Origin"},
}  # fmt: skip
STR = {"type": "string"}
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_STR = {"type": ["string", "null"]}
TIME = {"oneOf": [{"type": "integer"}, {"type": "string", "maxLength": 64}],
        "description": "Scenario time: Unix ms, or ISO 8601 with its UTC offset"}  # fmt: skip
TO = {"type": "array", "items": NAME, "minItems": 1, "maxItems": 64,
      "description": "Role names, all, parties, mediators or observers"}  # fmt: skip
TITLE = {"type": "string", "minLength": 1, "maxLength": 200}
TEXT = {"type": "string", "minLength": 1, "maxLength": 20000}
INJECT = _obj(
    ["number", "at", "scenario_time", "to", "title", "text", "status", "released_at", "by",
     "edited_by"],
    number=INT, at=INT, scenario_time=STR, to={"type": "array", "items": STR}, title=STR,
    text=STR, status={"type": "string", "enum": ["scheduled", "released", "skipped"]},
    released_at=NULLABLE_INT, by=NULLABLE_STR, edited_by=NULLABLE_STR,
    added={"type": "boolean"},
)  # fmt: skip
CLOCK = _obj(
    ["scenario_now", "wall_now", "paused", "speed", "utc_offset_minutes", "scenario_time"],
    scenario_now=INT, wall_now=INT, paused={"type": "boolean"}, speed={"type": "number"},
    utc_offset_minutes=INT, scenario_time=STR, anchor_ms=INT, wall_ms=INT,
)  # fmt: skip
ACTION = _obj(["id", "at", "by", "action", "detail"], id=INT, at=INT, by=STR,
              action={"type": "string", "enum": ["clock", "release", "skip", "edit", "add",
                                                 "invite"]},
              detail={"type": "object"})  # fmt: skip
EXERCISE_PARAM = {"name": "exercise", "in": "query", "required": False, "schema": NAME,
                  "description": "Which exercise (needed when several are loaded)"}  # fmt: skip
NUMBER_PARAM = {"name": "number", "in": "path", "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}}  # fmt: skip
AUTH_REFUSED = {
    **_refused(401, "control_auth: no admin token or control session, or a wrong one"),
    **_refused(
        403,
        "not_control: a participant's token; csrf: a change on a session cookie "
        "without its X-CSRF-Token, or from another Origin",
    ),
}
DONE = "inject_done: the inject is released (by hand or by the clock) or skipped already"
PICK = _refused(404, "unknown_exercise; unknown_inject; unknown_role")
FULL = "actions_full: the exercise has recorded 20,000 control actions"


def _control(
    summary: str, responses: dict[str, Any], *, body: Any = None,
    parameters: list[Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {**responses, **AUTH_REFUSED, **_errors(400)},
        "parameters": [EXERCISE_PARAM, *(parameters or [])],
        "security": CONTROL_SECURITY,
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return operation


def control_paths() -> dict[str, Any]:
    state = _obj(
        ["exercise", "title", "version", "roles", "clock", "injects", "traffic", "deadlines",
         "health", "actions"],
        exercise=NAME, title=STR, version=INT,
        roles={"type": "array", "items": _obj(
            ["name", "kind", "title", "registered", "registered_at", "invite_open"],
            name=NAME, kind=STR, title=STR, registered={"type": "boolean"},
            registered_at=NULLABLE_INT, invite_open={"type": "boolean"})},
        clock=CLOCK, injects={"type": "array", "items": INJECT},
        traffic=_obj(["control_sees", "letters", "counts"], control_sees={"type": "object"},
                     letters={"type": "array", "items": {"type": "object"}},
                     counts={"type": "object"}),
        deadlines={"type": "array", "items": {"type": "object"}},
        health=_obj(["connections", "queued_envelopes", "disk_free_bytes", "store"],
                    connections=INT, queued_envelopes=INT, disk_free_bytes=NULLABLE_INT,
                    store=STR),
        actions={"type": "array", "items": ACTION, "maxItems": 50},
    )  # fmt: skip
    inject_changed = {**_ok(INJECT), **_refused(409, f"{DONE}; {FULL}"), **PICK}
    return {
        "/v1/control/session": {
            "post": {
                "summary": "Log in to exercise control with the admin token: a session cookie "
                "(bc_control; HttpOnly, SameSite=Strict; 12 h; a relay restart ends it) and "
                "its CSRF token",
                "requestBody": _body(_obj(["token"], token={"type": "string", "maxLength": 256},
                                          name={**NAME, "description": "The controller"})),
                "responses": {
                    **_ok(_obj(["name", "csrf", "expires_at"], name=STR, csrf=STR,
                               expires_at=INT), "201", "Logged in"),
                    **_refused(401, "control_auth: the admin token is wrong"),
                    **_errors(400),
                },
                "security": [],
            },
            "delete": _control("End this control session",
                               _ok(_obj(["ended"], ended={"type": "boolean"}))),
        },
        "/v1/control/state": {
            "get": _control("Everything the control page shows (issue 18)",
                            {**_ok(state), **PICK}),
        },
        "/v1/control/version": {
            "get": _control("A number that grows whenever the control page must redraw",
                            {**_ok(_obj(["version"], version=INT)), **PICK}),
        },
        "/v1/control/injects": {
            "get": _control("The injects' schedule (MSEL)", {
                **_ok(_obj(["exercise", "injects"], exercise=NAME,
                           injects={"type": "array", "items": INJECT})), **PICK}),
            "post": _control(
                "Add an inject (numbered after the highest; at most 500 added)",
                {**_ok(INJECT, "201", "Added"),
                 **_refused(409, f"injects_full: 500 added already; {FULL}"), **PICK},
                body=_obj(["at", "to", "title", "text"], at=TIME, to=TO, title=TITLE, text=TEXT),
            ),
        },
        "/v1/control/injects/{number}": {
            "patch": _control("Edit a scheduled inject's title, text or time", inject_changed,
                              body=_obj([], title=TITLE, text=TEXT, at=TIME),
                              parameters=[NUMBER_PARAM]),
        },
        "/v1/control/injects/{number}/release": {
            "post": _control("Deliver a scheduled inject now (at the current scenario time)",
                             inject_changed, parameters=[NUMBER_PARAM]),
        },
        "/v1/control/injects/{number}/skip": {
            "post": _control("Never deliver a scheduled inject", inject_changed,
                             parameters=[NUMBER_PARAM]),
        },
        "/v1/control/clock": {
            "post": _control(
                "Pause, resume, set or speed the scenario clock",
                {**_ok(CLOCK), **_refused(409, FULL), **PICK},
                body=_obj(["action"], action={"type": "string",
                                              "enum": ["pause", "resume", "set", "speed"]},
                          time=TIME, speed={"type": "number"}),
            ),
        },
        "/v1/control/invites": {
            "post": _control(
                "A fresh invite for a role nobody has registered (its unused ones stop working)",
                {**_ok(_obj(["exercise", "role", "invite", "expires_at"], exercise=NAME,
                            role=NAME, invite=STR, expires_at=INT), "201", "Issued"),
                 **_refused(409, f"registered: the role is registered already; {FULL}"),
                 **PICK},
                body=_obj(["role"], role=NAME),
            ),
        },
        "/v1/control/actions": {
            "get": _control(
                "The control log, oldest first",
                {**_ok(_obj(["exercise", "actions"], exercise=NAME,
                            actions={"type": "array", "items": ACTION})), **PICK},
                parameters=[{"name": "newest", "in": "query", "required": False,
                             "schema": {"type": "integer", "minimum": 0}}],
            ),
        },
    }  # fmt: skip
