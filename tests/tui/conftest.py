"""The terminal interface driven by Textual's headless pilot at 80x24, against a real relay
subprocess and profiles made with the real CLI (the fixtures of tests/cli).

While an app runs, other participants act through `Backend` (the real CLI as a subprocess, the
way the TUI itself runs it), never through CliRunner: the app's event loop runs in this thread.
Each screen the tests look at is saved as SVG under tests/tui/artefacts/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from backchannel_cli.tui import BackchannelApp
from backchannel_cli.tui_backend import Backend
from tests.cli.conftest import (  # noqa: F401  (fixtures used by the tests here)
    Relay,
    User,
    _clean_environment,
    home,
    make_relay,
    participants,
    relay,
)

ARTEFACTS = Path(__file__).parent / "artefacts"
SIZE = (80, 24)
WAIT = 40.0
"""Seconds a test waits for the screen to show something (each command is a process)."""


def app_for(user: User, **options: Any) -> BackchannelApp:
    """The TUI for `user`'s profile, without an agent (the tests poll as the fallback does)."""
    return BackchannelApp(user.home, user.profile, agent=False, **options)


def backend(user: User) -> Backend:
    return Backend(user.home, user.profile)


def screen_text(app: BackchannelApp) -> str:
    """What the terminal shows now, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


DOCS = {"thread": "tui-thread.svg", "proposals-answered": "tui-proposals.svg"}
"""Screens the README shows (docs/), taken again with `make screenshots`."""


def shoot(app: BackchannelApp, name: str) -> Path:
    """Save the current screen as `artefacts/NAME.svg` (and its text as NAME.txt); with
    UPDATE_SCREENSHOTS=1, the README's copy too."""
    ARTEFACTS.mkdir(exist_ok=True)
    (ARTEFACTS / f"{name}.txt").write_text(screen_text(app) + "\n")
    saved = Path(app.save_screenshot(f"{name}.svg", str(ARTEFACTS)))
    if name in DOCS and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(saved, Path(__file__).parents[2] / "docs" / DOCS[name])
    return saved


async def until(
    pilot: Pilot[None], check: Callable[[], bool], what: str, timeout: float = WAIT
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            app = pilot.app
            shown = screen_text(app) if isinstance(app, BackchannelApp) else ""
            pytest.fail(f"timed out waiting for {what}; the screen:\n{shown}")
        await pilot.pause(0.1)


async def until_shown(app: BackchannelApp, pilot: Pilot[None], *texts: str) -> str:
    """Wait until every one of `texts` is on the screen; returns the screen's text."""
    await until(pilot, lambda: all(t in screen_text(app) for t in texts), f"{texts} shown")
    return screen_text(app)


def choose(app: BackchannelApp, table: str, key: str) -> None:
    """Put the cursor of `#TABLE` on the row `key` (a list keeps its cursor on the row it was
    on when rows move, so a test names the row it means)."""
    found: DataTable[Any] = app.screen.query_one(f"#{table}", DataTable)
    found.focus()
    found.move_cursor(row=found.get_row_index(key))


async def open_row(app: BackchannelApp, pilot: Pilot[None], table: str, key: str) -> None:
    choose(app, table, key)
    await pilot.press("enter")
