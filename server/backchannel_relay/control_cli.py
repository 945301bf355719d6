"""`backchannel-relay exercise injects|inject|invite|actions`: control's page on the command line
(issue 18). Each works on the store directly, like `exercise clock`, through the functions the
HTTP API calls (`control.py`), and each change is recorded under the controller's name (`--as`).
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .cli_base import (
    _exercises,
    _store_options,
    _store_used,
    exercise,
    exercise_option,
)


def _default_controller() -> str:
    """BACKCHANNEL_CONTROLLER, else the login name, else `control`."""
    named = os.environ.get("BACKCHANNEL_CONTROLLER")
    if named:
        return named
    try:
        login = getpass.getuser()
    except (OSError, KeyError):
        return "control"
    return login if 1 <= len(login) <= 64 and login.isprintable() else "control"


def _controller(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    from .control_auth import controller_name
    from .errors import RelayError

    try:
        return controller_name(value if value is not None else _default_controller())
    except RelayError as exc:
        raise click.BadParameter(exc.message) from None


as_option = click.option(
    "--as", "by", metavar="NAME", callback=_controller,
    help="The controller's name for the log (default: $BACKCHANNEL_CONTROLLER, else your login).",
)  # fmt: skip
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _plain(text: str) -> str:
    """No terminal escapes from text others wrote."""
    return "".join(c if c.isprintable() else " " for c in text)


def _scenario_time(value: str) -> int:
    """ISO 8601 with its UTC offset, or Unix ms."""
    if value.lstrip("-").isdigit() and len(value) <= 20:
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise click.BadParameter(
            "a time with its UTC offset, like 1962-10-27T09:00:00-04:00", param_hint="--at"
        )
    return int(moment.timestamp() * 1000)


def _inject_line(inject: dict[str, Any]) -> str:
    by = f" by {_plain(inject['by'])}" if inject["by"] else ""
    edited = f", edited by {_plain(inject['edited_by'])}" if inject["edited_by"] else ""
    return (f"  {inject['number']:>3} {inject['scenario_time']} to {', '.join(inject['to'])}: "
            f"{_plain(inject['title'])} [{inject['status']}{by}{edited}]")  # fmt: skip


def _done(found: dict[str, Any], data_dir: Path, database_url: str | None, as_json: bool,
          line: str) -> None:  # fmt: skip
    store = _store_used(data_dir, database_url, as_json)
    click.echo(json.dumps({**found, **store}) if as_json else line)


@exercise.command("injects")
@exercise_option
@_store_options
@json_option
def exercise_injects(name: str | None, data_dir: Path, database_url: str | None,
                     as_json: bool) -> None:  # fmt: skip
    """The injects' schedule (MSEL): number, scenario time, to, title, status, by whom."""

    async def work(exercises: Any) -> Any:
        from . import control

        picked = await exercises.pick(name)
        return {"exercise": picked, "injects": await control.injects(exercises, picked)}

    found = _exercises(data_dir, database_url, work)
    lines = [f"exercise {found['exercise']}: injects"]
    lines += [_inject_line(i) for i in found["injects"]] or ["  none"]
    _done(found, data_dir, database_url, as_json, "\n".join(lines))


@exercise.group("inject")
def inject() -> None:
    """Release, skip, edit or add an inject."""


def _change(data_dir: Path, database_url: str | None, as_json: bool, name: str | None,
            verb: str, call: Any) -> None:  # fmt: skip
    async def work(exercises: Any) -> Any:
        picked = await exercises.pick(name)
        return {"exercise": picked, "inject": await call(exercises, picked)}

    found = _exercises(data_dir, database_url, work)
    shown = found["inject"]
    _done(found, data_dir, database_url, as_json,
          f"inject {shown['number']} {verb}:\n{_inject_line(shown)}")  # fmt: skip


@inject.command("release")
@click.argument("number", type=click.IntRange(1, 2**31 - 1))
@as_option
@exercise_option
@_store_options
@json_option
def inject_release(number: int, by: str, name: str | None, data_dir: Path,
                   database_url: str | None, as_json: bool) -> None:  # fmt: skip
    """Deliver inject NUMBER now (at the current scenario time)."""
    from . import control

    _change(data_dir, database_url, as_json, name, "released",
            lambda ex, picked: control.release(ex, picked, number, by))  # fmt: skip


@inject.command("skip")
@click.argument("number", type=click.IntRange(1, 2**31 - 1))
@as_option
@exercise_option
@_store_options
@json_option
def inject_skip(number: int, by: str, name: str | None, data_dir: Path,
                database_url: str | None, as_json: bool) -> None:  # fmt: skip
    """Never deliver inject NUMBER."""
    from . import control

    _change(data_dir, database_url, as_json, name, "skipped",
            lambda ex, picked: control.skip(ex, picked, number, by))  # fmt: skip


@inject.command("edit")
@click.argument("number", type=click.IntRange(1, 2**31 - 1))
@click.option("--title", help="A new title.")
@click.option("--text", help="A new text.")
@click.option("--at", "at_text", metavar="TIME", help="A new scenario time (ISO 8601).")
@as_option
@exercise_option
@_store_options
@json_option
def inject_edit(number: int, title: str | None, text: str | None, at_text: str | None, by: str,
                name: str | None, data_dir: Path, database_url: str | None,
                as_json: bool) -> None:  # fmt: skip
    """Change a scheduled inject's title, text or time; its number stays."""
    from . import control

    at = _scenario_time(at_text) if at_text is not None else None
    _change(data_dir, database_url, as_json, name, "edited",
            lambda ex, picked: control.edit(ex, picked, number, by, title, text, at))  # fmt: skip


@inject.command("add")
@click.option("--at", "at_text", metavar="TIME", required=True, help="Scenario time (ISO 8601).")
@click.option("--to", "to", metavar="NAME", multiple=True, required=True,
              help="A role, all, parties, mediators or observers (repeat for more).")  # fmt: skip
@click.option("--title", required=True)
@click.option("--text", required=True)
@as_option
@exercise_option
@_store_options
@json_option
def inject_add(at_text: str, to: tuple[str, ...], title: str, text: str, by: str,
               name: str | None, data_dir: Path, database_url: str | None,
               as_json: bool) -> None:  # fmt: skip
    """A new inject, numbered after the highest."""
    from . import control

    at = _scenario_time(at_text)
    _change(data_dir, database_url, as_json, name, "added",
            lambda ex, picked: control.add(ex, picked, by, at, list(to), title, text))  # fmt: skip


@exercise.command("invite")
@click.argument("role")
@click.option("--ttl", "ttl_hours", type=click.FloatRange(min=0.01, max=366 * 24), default=168.0,
              show_default=True, help="Hours until the invite expires.")  # fmt: skip
@as_option
@exercise_option
@_store_options
@json_option
def exercise_invite(role: str, ttl_hours: float, by: str, name: str | None, data_dir: Path,
                    database_url: str | None, as_json: bool) -> None:  # fmt: skip
    """A new invite for ROLE (not registered yet); its earlier unused invites stop working."""

    async def work(exercises: Any) -> Any:
        from . import control

        picked = await exercises.pick(name)
        return await control.invite(exercises, picked, role, by, int(ttl_hours * 3600))

    made = _exercises(data_dir, database_url, work)
    _done(made, data_dir, database_url, as_json,
          f"invite for {made['role']}: {made['invite']}")  # fmt: skip


@exercise.command("actions")
@exercise_option
@_store_options
@json_option
def exercise_actions(name: str | None, data_dir: Path, database_url: str | None,
                     as_json: bool) -> None:  # fmt: skip
    """What control did, by whom, when: the log, newest last."""

    async def work(exercises: Any) -> Any:
        from . import control

        picked = await exercises.pick(name)
        return {"exercise": picked, "actions": await control.actions(exercises, picked)}

    found = _exercises(data_dir, database_url, work)
    lines = [f"exercise {found['exercise']}: control actions"]
    for entry in found["actions"]:
        when = datetime.fromtimestamp(entry["at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        detail = entry["detail"]
        what = entry["action"]
        if "number" in detail:
            what += f" inject {detail['number']}"
        elif "change" in detail:
            what += f" {detail['change']}"
        elif "role" in detail:
            what += f" for {detail['role']}"
        lines.append(f"  {entry['id']:>5} {when} UTC {_plain(entry['by'])}: {what}")
    if not found["actions"]:
        lines.append("  none")
    _done(found, data_dir, database_url, as_json, "\n".join(lines))


@exercise.command("room")
@exercise_option
@_store_options
@json_option
def exercise_room(name: str | None, data_dir: Path, database_url: str | None,
                  as_json: bool) -> None:  # fmt: skip
    """Everything the control page shows, from the store: roles and who registered, the clock,
    the injects, traffic as each class allows, deadlines, recent actions, the store's health
    (live connections only the serving relay knows: GET /v1/control/state)."""

    async def work(exercises: Any) -> Any:
        from . import control

        picked = await exercises.pick(name)
        view = await control.state(exercises, picked)
        return {**view, "health": await control.store_health(exercises.store, data_dir)}

    room = _exercises(data_dir, database_url, work)
    clock = room["clock"]
    lines = [
        f"exercise {room['exercise']}: {_plain(room['title'])}",
        f"  clock: {clock['scenario_time']} ({'paused' if clock['paused'] else 'running'}, "
        f"speed {clock['speed']})",
        "  roles:",
    ]
    for role in room["roles"]:
        joined = "registered" if role["registered"] else (
            "invite open" if role["invite_open"] else "no open invite")  # fmt: skip
        lines.append(f"    {role['name']} ({role['kind']}): {joined}")
    lines.append("  injects:")
    lines += [f"    {_inject_line(i)}" for i in room["injects"]] or ["    none"]
    traffic = room["traffic"]
    lines.append(f"  traffic: {len(traffic['letters'])} letter(s) control may list; counts "
                 + (", ".join(f"{k} {v}" for k, v in traffic["counts"].items()) or "none"))
    lines.append("  deadlines:")
    lines += [
        f"    {d['kind']} {d['id'][:12]} {_plain(d['from'])} -> "
        f"{', '.join(_plain(t) for t in d['to'])}: {d['scenario_time']}"
        for d in room["deadlines"]
    ] or ["    none"]
    health = room["health"]
    disk = health["disk_free_bytes"]
    lines.append(f"  store: {health['store']}, {health['queued_envelopes']} envelope(s) waiting"
                 + (f", {disk // 2**20} MiB free" if disk is not None else ""))  # fmt: skip
    _done(room, data_dir, database_url, as_json, "\n".join(lines))
