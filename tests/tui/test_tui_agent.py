"""The TUI over the profile's agent: it starts one when none runs, follows `agent events`, and a
letter shows without waiting for a poll."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from backchannel_cli.tui import BackchannelApp
from tests.cli.conftest import Relay, participants

from .conftest import SIZE, backend, shoot, until, until_shown


def test_the_tui_starts_the_agent_and_follows_its_events(relay: Relay, home: Path) -> None:
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    app = BackchannelApp(khrushchev.home, khrushchev.profile)
    try:

        async def drive() -> None:
            async with app.run_test(size=SIZE) as pilot:
                await until_shown(app, pilot, "agent: running")
                await until(pilot, lambda: app.refreshes >= 1, "the first refresh")
                started = time.monotonic()
                await backend(kennedy).json(
                    "send", "--", khrushchev.name, stdin="Through the agent, promptly."
                )
                await until_shown(app, pilot, "Through the agent, promptly.", "1 new")
                shown_after = time.monotonic() - started
                shoot(app, "conversations-agent")
                assert shown_after < 10, shown_after
                assert app.agent_state == "running"  # the events stream never ended

        asyncio.run(drive())
        assert khrushchev.json("agent", "status")["pid"]
    finally:
        khrushchev.run("agent", "stop")
