"""`backchannel tui`: the whole exercise on one screen of 80x24, on top of the CLI.

Every action runs a `backchannel ... --json` command through `Backend` (issue 19: everything the
TUI does is also a CLI command) and the screens show what the commands answer. New messages come
from `inbox --no-read-receipts`, so a letter counts as unread until its thread is opened here
(which runs `show ID`: that marks it read and sends the read receipt). Updates follow `agent
events` while an agent runs, else a poll every 2 s; a full refresh runs every 10 s regardless.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from .commandline import PASSPHRASE_ENV
from .errors import CliError
from .render import safe
from .tui_backend import Backend, TuiError
from .tui_model import (
    CONTROL,
    OFF_THE_RECORD,
    OffTheRecordMemory,
    Snapshot,
    channel_rows,
    conversations,
    exercise_text,
    inject_lines,
    is_unread,
    message_detail,
    message_summary,
    otr_marker,
    proposal_detail,
    proposal_summary,
    thread,
)

POLL_SECONDS = 2.0
"""Without an event stream: how often `inbox` looks for new messages."""
FULL_REFRESH_SECONDS = 10.0
"""How often everything is read again, events or not (statuses, the clock)."""
OTR_STYLE = "bold white on dark_red"
"""How anything off the record looks, wherever it is shown."""
AGENT_TIMEOUT = 30.0
"""Seconds `agent status` and `agent start` may take before the TUI goes on without one."""
STATUS_WIDTH = 300
"""Characters of a status line kept (a relay's message may be long)."""


class BackchannelApp(App[None]):
    """The participant's terminal interface for one profile."""

    CSS_PATH = "tui.tcss"
    TITLE = "Backchannel"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "conversations": lambda: ConversationsScreen(),
        "proposals": lambda: ProposalsScreen(),
        "exercise": lambda: ExerciseScreen(),
        "mediator": lambda: MediatorScreen(),
    }
    DEFAULT_MODE = "conversations"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("1", "switch_mode('conversations')", "Talk"),
        Binding("2", "switch_mode('proposals')", "Proposals"),
        Binding("3", "switch_mode('exercise')", "Exercise"),
        Binding("4", "switch_mode('mediator')", "Mediator"),
        Binding("g", "refresh", "Refresh"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(
        self,
        home: Path | None,
        profile: str,
        agent: bool = True,
        backend: Backend | None = None,
        first_screen: bool = False,
    ) -> None:
        super().__init__()
        self.first_screen = first_screen
        """Exit once the first screen is drawn with what the commands said (the benchmark)."""
        self.backend = backend or Backend(home, profile)
        self.use_agent = agent
        self.snapshot = Snapshot()
        self.memory = OffTheRecordMemory()
        self.status_line = "Starting..."
        self.agent_state = "off" if not agent else "?"
        self.refreshes = 0
        """Completed refreshes (tests wait on it)."""
        self._lock = asyncio.Lock()
        self._last_full = 0.0

    # --- start, live updates, refresh ---------------------------------------------------------

    def on_mount(self) -> None:
        self.run_worker(self._start(), exit_on_error=False, group="live")

    async def _start(self) -> None:
        running = False
        if self.use_agent:
            running = await self._agent_unlocked()
        if not running and self._needs_passphrase():
            passphrase = await self.push_screen_wait(PassphraseScreen())
            if passphrase:  # the commands this window runs read it (as scripts do)
                self.backend.env = {**os.environ, PASSPHRASE_ENV: passphrase}
        events = running
        if self.use_agent and not running:
            events = await self._ensure_agent()
        await self.refresh_data()
        if self.first_screen:
            self.call_after_refresh(self.exit)
            return
        self.set_interval(FULL_REFRESH_SECONDS, self._timed_refresh)
        if events:
            self.run_worker(self._follow_events(), exit_on_error=False, group="live")
        else:
            self.set_interval(POLL_SECONDS, self._poll)

    async def _agent_unlocked(self) -> bool:
        """Whether an unlocked agent runs for the profile already."""
        try:
            status = await self.backend.json("agent", "status", timeout=AGENT_TIMEOUT)
        except TuiError:
            return False
        if isinstance(status, dict) and status.get("running", True) and not status.get("locked"):
            self.agent_state = "running"
            return True
        return False

    def _needs_passphrase(self) -> bool:
        """The keystore is sealed with a passphrase, and neither the environment nor an agent
        supplies it."""
        from .profile import keystore_needs_passphrase, profile_dir

        if PASSPHRASE_ENV in os.environ or self.backend.home is None:
            return False
        try:
            return keystore_needs_passphrase(profile_dir(self.backend.home, self.backend.profile))
        except CliError:
            return False  # the first command says what is wrong with the profile

    async def _ensure_agent(self) -> bool:
        """Start the profile's agent if none runs; False (go on without it) on any failure."""
        try:
            status = await self.backend.json("agent", "status", timeout=AGENT_TIMEOUT)
            if not (isinstance(status, dict) and status.get("running", True)):
                code, _, err = await self.backend.run("agent", "start", timeout=AGENT_TIMEOUT)
                if code != 0:
                    raise TuiError(err.strip().splitlines()[-1] if err.strip() else "failed")
        except TuiError as exc:
            self.agent_state = "none"
            self.say(f"No agent ({exc.message}); polling every {POLL_SECONDS:g} s.")
            return False
        self.agent_state = "running"
        return True

    async def _follow_events(self) -> None:
        """Refresh after each event line; a burst of events while a refresh runs costs one more
        refresh, not one each."""
        wanted = asyncio.Event()

        async def refresher() -> None:
            while True:
                await wanted.wait()
                wanted.clear()
                await self.refresh_data()

        worker = asyncio.ensure_future(refresher())
        try:
            async for _event in self.backend.events():
                wanted.set()
        except TuiError as exc:
            self.agent_state = "none"
            self.say(f"Agent events ended ({exc.message}); polling every {POLL_SECONDS:g} s.")
        finally:
            worker.cancel()
        self.set_interval(POLL_SECONDS, self._poll)

    async def _poll(self) -> None:
        if self._lock.locked():
            return
        await self.refresh_data(only_if_new=True)

    async def _timed_refresh(self) -> None:
        if not self._lock.locked() and time.monotonic() - self._last_full >= FULL_REFRESH_SECONDS:
            await self.refresh_data()

    async def refresh_data(self, only_if_new: bool = False) -> None:
        """`inbox`, then everything the screens show. With `only_if_new`: the rest only when
        the inbox brought something (a poll must stay cheap without an agent)."""
        async with self._lock:
            try:
                fresh = await self.backend.json("inbox", "--no-read-receipts")
            except TuiError as exc:
                self.say(f"inbox: {exc.message}", error=True)
                fresh = []
            fresh = fresh if isinstance(fresh, list) else []
            for message in fresh:
                if message.get("kind") == "otr":
                    self.memory.add(message)
            if fresh:
                self.say(f"{len(fresh)} new message(s).")
            if only_if_new and not fresh:
                return
            await self._read_everything()
            self._last_full = time.monotonic()
            self.refreshes += 1
        self.show_snapshot()

    async def _read_everything(self) -> None:
        commands: dict[str, tuple[str, ...]] = {
            "directory": ("directory",),
            "history": ("history",),
            "proposals": ("proposals",),
            "exercise": ("exercise",),
            "otr": ("otr", "list"),
        }
        if self.snapshot.is_mediator or not self.snapshot.role:  # (not known before the first)
            commands["exchanges"] = ("exchange", "list")
        answers = await asyncio.gather(
            *(self.backend.json(*args) for args in commands.values()), return_exceptions=True
        )
        got = dict(zip(commands, answers, strict=True))
        snap = self.snapshot
        problems = []
        for key, value in got.items():
            if isinstance(value, TuiError):
                if key == "exercise" and value.code == "no_exercise":
                    snap.exercise = None
                    continue
                if key == "exchanges" and not snap.is_mediator:
                    continue
                problems.append(f"{' '.join(commands[key])}: {value.message}")
                continue
            if isinstance(value, BaseException):
                problems.append(f"{' '.join(commands[key])}: {value}")
                continue
            if key == "directory":
                snap.directory = list(value)
                me = [e for e in snap.directory if e.get("me")]
                if me:
                    snap.me, snap.role = str(me[0]["name"]), str(me[0]["role"])
            elif key == "history":
                snap.history = list(value)
            elif key == "proposals":
                snap.proposals = list(value)
            elif key == "exercise":
                snap.exercise = dict(value)
            elif key == "otr":
                snap.otr_channels = list(value)
                open_with = {str(c.get("with")) for c in snap.otr_channels}
                for peer in self.memory.peers():
                    if peer not in open_with:
                        self.memory.forget(peer)  # the channel closed or expired: forget it
            elif key == "exchanges":
                snap.exchanges = list(value)
        if problems:
            self.say(problems[0], error=True)

    async def on_unmount(self) -> None:
        await self.backend.close()  # no command outlives the window

    def show_snapshot(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, BoardScreen):
                screen.show_snapshot()

    # --- actions shared by the screens ----------------------------------------------------------

    def say(self, text: str, error: bool = False) -> None:
        """The status line: what was done, or what went wrong (never a crash)."""
        self.status_line = ("Error: " if error else "") + " ".join(text.split())[:STATUS_WIDTH]
        for screen in self.screen_stack:
            if isinstance(screen, BoardScreen):
                screen.show_status()

    def topbar(self) -> str:
        snap = self.snapshot
        clock = ""
        if snap.exercise is not None:
            state = "paused" if snap.exercise["clock"].get("paused") else "running"
            clock = f" | {snap.exercise['clock'].get('scenario_time')} ({state})"
        who = f"{snap.me or self.backend.profile} ({snap.role or '?'})"
        return f"{who}{clock} | agent: {self.agent_state}"

    def perform(
        self,
        what: str,
        action: Callable[[], Awaitable[Any]],
        done: Callable[[Any], str] | None = None,
    ) -> None:
        """Run one CLI action in the background; its outcome goes to the status line, then
        everything is read again."""

        async def work() -> None:
            self.say(f"{what}...")
            try:
                result = await action()
            except TuiError as exc:
                self.say(f"{what}: {exc.message}", error=True)
                return
            except Exception as exc:  # a bug must not take the screen down
                self.say(f"{what}: {type(exc).__name__}: {exc}", error=True)
                return
            await self.refresh_data()  # the screens show the outcome when it is announced
            self.say(done(result) if done is not None else f"{what}: done.")

        self.run_worker(work(), exit_on_error=False, group="actions")

    def action_refresh(self) -> None:
        self.perform("refresh", lambda: asyncio.sleep(0), lambda _: "Refreshed.")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())


# --- the screens -------------------------------------------------------------------------------


class BoardScreen(Screen[None]):
    """A screen with the top bar (who, scenario clock, agent), a status line and the footer."""

    def compose(self) -> ComposeResult:
        yield Static("", markup=False, id="topbar")
        yield from self.body()
        yield Static("", markup=False, id="status")
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    @property
    def tui(self) -> BackchannelApp:
        assert isinstance(self.app, BackchannelApp)
        return self.app

    def on_mount(self) -> None:
        self.show_status()
        self.show_snapshot()

    def on_screen_resume(self) -> None:
        self.show_status()
        self.show_snapshot()

    def show_status(self) -> None:
        if self.is_mounted:
            status = self.query_one("#status", Static)
            status.update(self.tui.status_line)
            status.set_class(self.tui.status_line.startswith("Error"), "error")

    def show_snapshot(self) -> None:
        if self.is_mounted:
            self.query_one("#topbar", Static).update(self.tui.topbar())
            self.show_data()

    def show_data(self) -> None:
        """Fill the screen's own widgets from the app's snapshot."""


def _fill(table: DataTable[Text], rows: Sequence[tuple[str, Sequence[str | Text]]]) -> None:
    """Replace a table's rows, keeping the cursor on the same key where it still exists."""
    current = None
    if table.row_count and table.cursor_row < table.row_count:
        current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    table.clear()
    for key, cells in rows:
        table.add_row(*(_cell(cell) for cell in cells), key=key)
    keys = [key for key, _ in rows]
    if current in keys:
        table.move_cursor(row=keys.index(str(current)))


def _cell(value: str | Text) -> Text:
    """A table cell: what others wrote is shown as text (no markup, no control characters)."""
    return value if isinstance(value, Text) else Text(safe(value), no_wrap=True)


def _selected(table: DataTable[Text]) -> str | None:
    if not table.row_count:
        return None
    key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    return None if key is None else str(key)


class ConversationsScreen(BoardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
        Binding("o", "otr_open", "Open OTR"),
        Binding("x", "otr_close", "Close OTR"),
    ]

    def body(self) -> ComposeResult:
        yield Label("Conversations (enter: open the thread)", classes="title", markup=False)
        table: DataTable[Text] = DataTable(id="conversations", cursor_type="row")
        table.add_columns("peer", "unread", "", "last")
        yield table

    def show_data(self) -> None:
        rows = []
        for c in conversations(self.tui.snapshot, self.tui.memory):
            unread = f"{c.unread} new" if c.unread else ""
            mark = Text(c.off_the_record, style=OTR_STYLE) if c.off_the_record else ""
            rows.append((c.peer, [c.peer, unread, mark, c.last_line]))
        _fill(self.query_one("#conversations", DataTable), rows)

    @on(DataTable.RowSelected, "#conversations")
    def _chosen(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(ThreadScreen(str(event.row_key.value)))

    def action_open(self) -> None:
        peer = _selected(self.query_one("#conversations", DataTable))
        if peer is not None:
            self.app.push_screen(ThreadScreen(peer))

    def action_otr_open(self) -> None:
        peer = _selected(self.query_one("#conversations", DataTable))
        if peer is None or peer == CONTROL:
            return

        def opened(answer: Any) -> str:
            return f"Off the record with {peer}: {answer.get('status')} (control sees " \
                   f"{answer.get('control_sees')})."  # fmt: skip

        self.tui.perform(
            f"otr open {peer}", lambda: self.tui.backend.json("otr", "open", "--", peer), opened
        )

    def action_otr_close(self) -> None:
        peer = _selected(self.query_one("#conversations", DataTable))
        if peer is not None and peer != CONTROL:
            self.tui.memory.forget(peer)
            self.tui.perform(
                f"otr close {peer}", lambda: self.tui.backend.json("otr", "close", "--", peer)
            )


class ThreadScreen(BoardScreen):
    """One peer: the messages in order, the selected one in full, and the compose box."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("r", "reply", "Reply"),
        Binding("a", "ack", "Ack"),
        Binding("o", "toggle_otr", "OTR on/off"),
        Binding("w", "write", "Write"),
    ]

    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer
        self.reply_to: str | None = None
        self.off_the_record = False
        self._opened: set[str] = set()

    def body(self) -> ComposeResult:
        yield Label(f"With {self.peer}", id="thread-title", classes="title", markup=False)
        table: DataTable[Text] = DataTable(id="messages", cursor_type="row")
        table.add_columns("message")
        yield table
        with VerticalScroll(id="detail-box"):
            yield Static("", markup=False, id="detail")
        yield Label("", id="compose-mode", markup=False)
        yield Input(placeholder=f"a letter to {self.peer} (enter sends)", id="compose")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#messages", DataTable).focus()
        self._show_mode()

    def show_data(self) -> None:
        snap = self.tui.snapshot
        messages = thread(snap, self.tui.memory, self.peer)
        marker = otr_marker(snap, self.peer)
        title = self.query_one("#thread-title", Label)
        title.update(f"With {self.peer}" + (f" | {marker}" if marker else ""))
        title.set_class(marker is not None, "otr")
        table = self.query_one("#messages", DataTable)
        at_end = table.row_count == 0 or table.cursor_row >= table.row_count - 1
        _fill(
            table,
            [
                (
                    m["id"],
                    [Text(safe(message_summary(m)), style=OTR_STYLE if m["kind"] == "otr" else "")],
                )
                for m in messages
            ],
        )
        if at_end and table.row_count:
            table.move_cursor(row=table.row_count - 1)
        self._show_selected()
        unread = [m["id"] for m in messages if is_unread(m) and m["id"] not in self._opened]
        if unread:
            self._mark_read(unread)

    def _mark_read(self, ids: list[str]) -> None:
        """Displayed here: `show ID` marks each read and sends its read receipt."""
        self._opened.update(ids)

        async def read_all() -> None:
            for ident in ids:
                await self.tui.backend.json("show", ident)

        self.tui.perform(f"reading {len(ids)} letter(s)", read_all, lambda _: "Read.")

    def _message(self, ident: str | None) -> dict[str, Any] | None:
        for m in thread(self.tui.snapshot, self.tui.memory, self.peer):
            if m["id"] == ident:
                return m
        return None

    def _show_selected(self) -> None:
        message = self._message(_selected(self.query_one("#messages", DataTable)))
        detail = self.query_one("#detail", Static)
        detail.update(message_detail(message) if message is not None else "No messages yet.")
        detail.set_class(message is not None and message["kind"] == "otr", "otr")

    @on(DataTable.RowHighlighted, "#messages")
    def _highlighted(self) -> None:
        self._show_selected()

    def _show_mode(self) -> None:
        mode = self.query_one("#compose-mode", Label)
        box = self.query_one("#compose", Input)
        if self.off_the_record:
            mode.update(f"{OFF_THE_RECORD} to {self.peer}: deniable, nothing kept")
            box.placeholder = f"off the record to {self.peer} (enter sends)"
        else:
            reply = f", in reply to {self.reply_to[:8]}" if self.reply_to else ""
            mode.update(f"Signed letter to {self.peer}{reply}")
            box.placeholder = f"a letter to {self.peer} (enter sends)"
        mode.set_class(self.off_the_record, "otr")
        box.set_class(self.off_the_record, "otr")

    def action_back(self) -> None:
        if self.query_one("#compose", Input).has_focus:
            self.query_one("#messages", DataTable).focus()
        else:
            self.app.pop_screen()

    def action_write(self) -> None:
        self.query_one("#compose", Input).focus()

    def action_reply(self) -> None:
        ident = _selected(self.query_one("#messages", DataTable))
        message = self._message(ident)
        if message is None or message["kind"] == "otr":
            self.tui.say("Choose a stored message to reply to.", error=True)
            return
        self.reply_to = ident
        self.off_the_record = False
        self._show_mode()
        self.query_one("#compose", Input).focus()

    def action_toggle_otr(self) -> None:
        self.off_the_record = not self.off_the_record
        self.reply_to = None
        self._show_mode()

    def action_ack(self) -> None:
        ident = _selected(self.query_one("#messages", DataTable))
        message = self._message(ident)
        if ident is None or message is None or message["to"] != "me":
            self.tui.say("Choose a letter or proposal you received to acknowledge.", error=True)
            return
        self.tui.perform(
            f"ack {ident[:8]}",
            lambda: self.tui.backend.json("ack", ident),
            lambda _: f"Acknowledged {ident[:8]} (signed).",
        )

    @on(Input.Submitted, "#compose")
    def _send(self, event: Input.Submitted) -> None:
        text = event.value
        if not text.strip():
            return
        event.input.value = ""
        backend, peer = self.tui.backend, self.peer
        if self.off_the_record:

            async def send_otr() -> Any:
                sent = await backend.json("otr", "send", "--", peer, stdin=text)
                self.tui.memory.add(sent)  # never stored by the CLI: kept here only
                return sent

            self.tui.perform(f"otr send {peer}", send_otr, lambda _: "Sent off the record.")
            return
        reply = ["--reply-to", self.reply_to] if self.reply_to else []
        self.reply_to = None
        self._show_mode()
        self.tui.perform(
            f"send {peer}",
            lambda: backend.json("send", *reply, "--", peer, stdin=text),
            lambda sent: f"Sent {sent['id'][:8]} ({sent['status']}).",
        )


class ProposalsScreen(BoardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open"),
        Binding("a", "accept", "Accept"),
        Binding("x", "reject", "Reject"),
        Binding("n", "counter", "Counter"),
        Binding("w", "withdraw", "Withdraw"),
        Binding("k", "ack", "Ack"),
        Binding("P", "propose", "Propose"),
    ]

    def body(self) -> ComposeResult:
        yield Label("Proposals (deadlines in scenario time)", classes="title", markup=False)
        table: DataTable[Text] = DataTable(id="proposals", cursor_type="row")
        table.add_columns("id", "with", "title", "state", "expires")
        yield table
        with VerticalScroll(id="detail-box"):
            yield Static("", markup=False, id="proposal-detail")

    def show_data(self) -> None:
        snap = self.tui.snapshot
        rows = [(p["id"], proposal_summary(p, snap.exercise)) for p in snap.proposals]
        _fill(self.query_one("#proposals", DataTable), rows)
        self._show_selected()

    def _current(self) -> dict[str, Any] | None:
        ident = _selected(self.query_one("#proposals", DataTable))
        return next((p for p in self.tui.snapshot.proposals if p["id"] == ident), None)

    def _show_selected(self) -> None:
        view = self._current()
        self.query_one("#proposal-detail", Static).update(
            proposal_detail(view, self.tui.snapshot.exercise) if view else "No proposals."
        )

    @on(DataTable.RowHighlighted, "#proposals")
    def _highlighted(self) -> None:
        self._show_selected()

    def _act(self, verb: str, *extra: str, stdin: str | None = None) -> None:
        view = self._current()
        if view is None:
            self.tui.say("No proposal chosen.", error=True)
            return
        ident = str(view["id"])
        self.tui.perform(
            f"{verb} {ident[:8]}",
            lambda: self.tui.backend.json(verb, *extra, "--", ident, stdin=stdin),
            lambda answer: f"{verb} {ident[:8]}: {answer.get('status', 'done')}.",
        )

    def action_open(self) -> None:
        self._act("show")  # a proposal made to us: the signed "opened" statement

    def action_accept(self) -> None:
        self._act("accept")

    def action_ack(self) -> None:
        self._act("ack")

    def action_withdraw(self) -> None:
        self._act("withdraw")

    def action_reject(self) -> None:
        def got(values: dict[str, str] | None) -> None:
            if values is not None:
                reason = values["reason"].strip()
                self._act("reject", *(["--reason", reason] if reason else []))

        self.app.push_screen(FormScreen("Reject the proposal", [("reason", "Why (optional)")]), got)

    def action_counter(self) -> None:
        def got(values: dict[str, str] | None) -> None:
            if values is not None and values["title"].strip() and values["terms"].strip():
                terms = "\n".join(t.strip() for t in values["terms"].split(";"))
                self._act("counter", "--title", values["title"], "--file", "-", stdin=terms)

        fields = [("title", "Title of the counter-offer"), ("terms", "Terms, separated by ;")]
        self.app.push_screen(FormScreen("Counter-proposal", fields), got)

    def action_propose(self) -> None:
        def got(values: dict[str, str] | None) -> None:
            if values is None or not all(v.strip() for v in values.values()):
                return
            terms = "\n".join(t.strip() for t in values["terms"].split(";"))
            to, title = values["to"].strip(), values["title"]
            self.tui.perform(
                f"propose to {to}",
                lambda: self.tui.backend.json(
                    "propose", "--title", title, "--file", "-", "--", to, stdin=terms
                ),
                lambda answer: f"Proposed {answer['id'][:8]} ({answer['status']}).",
            )

        fields = [("to", "To (name)"), ("title", "Title"), ("terms", "Terms, separated by ;")]
        self.app.push_screen(FormScreen("New proposal", fields), got)


class ExerciseScreen(BoardScreen):
    def body(self) -> ComposeResult:
        with VerticalScroll(id="exercise-box"):
            yield Static("", markup=False, id="exercise")
            yield Label("Channels: what control sees", classes="title", markup=False)
            table: DataTable[Text] = DataTable(id="channels", cursor_type="row")
            table.add_columns("peer", "how", "letters", "control sees", "off the record")
            yield table
            yield Label("Injects (signed by control)", classes="title", markup=False)
            yield Static("", markup=False, id="injects")

    def show_data(self) -> None:
        snap = self.tui.snapshot
        self.query_one("#exercise", Static).update(exercise_text(snap.exercise))
        rows = [(row[0], row) for row in channel_rows(snap.exercise)]
        _fill(self.query_one("#channels", DataTable), rows)
        self.query_one("#injects", Static).update("\n".join(inject_lines(snap)) or "None yet.")


MEDIATOR_TITLE = "Mediator: introduce (i), forward (f), release the chosen exchange (r)"


class MediatorScreen(BoardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("i", "introduce", "Introduce"),
        Binding("f", "forward", "Forward"),
        Binding("r", "release", "Release"),
    ]

    def body(self) -> ComposeResult:
        yield Label(MEDIATOR_TITLE, id="med-title", markup=False)
        table: DataTable[Text] = DataTable(id="exchanges", cursor_type="row")
        table.add_columns("exchange", "sides", "status", "offers (titles)")
        yield table

    def show_data(self) -> None:
        snap = self.tui.snapshot
        self.query_one("#med-title", Label).update(
            MEDIATOR_TITLE
            if snap.is_mediator or not snap.role
            else "Only a mediator introduces, forwards and releases exchanges."
        )
        rows = [
            (
                str(e["id"]),
                [
                    str(e["id"])[:8],
                    " & ".join(e.get("sides", [])),
                    str(e.get("status")),
                    " / ".join(str(o["title"]) for o in e.get("offers", [])),
                ],
            )
            for e in snap.exchanges
        ]
        _fill(self.query_one("#exchanges", DataTable), rows)

    def action_introduce(self) -> None:
        def got(values: dict[str, str] | None) -> None:
            if values is not None and values["a"].strip() and values["b"].strip():
                a, b = values["a"].strip(), values["b"].strip()
                self.tui.perform(
                    f"introduce {a} {b}",
                    lambda: self.tui.backend.json("introduce", "--", a, b),
                    lambda _: f"Introduced {a} and {b}.",
                )

        fields = [("a", "First party"), ("b", "Second party")]
        self.app.push_screen(FormScreen("Introduce", fields), got)

    def action_forward(self) -> None:
        def got(values: dict[str, str] | None) -> None:
            if values is None or not values["id"].strip() or not values["to"].strip():
                return
            ident, to, text = values["id"].strip(), values["to"].strip(), values["text"]
            own = ["--as-own"] if text.strip() else []
            self.tui.perform(
                f"forward {ident[:8]} to {to}",
                lambda: self.tui.backend.json(
                    "forward", "--to", to, *own, "--", ident, stdin=text if own else None
                ),
                lambda _: f"Forwarded {ident[:8]} to {to}" + (" as your own." if own else "."),
            )

        fields = [
            ("id", "Message or proposal ID (4+ hex digits)"),
            ("to", "To (name)"),
            ("text", "Re-worded text (empty: verbatim, with consent)"),
        ]
        self.app.push_screen(FormScreen("Forward", fields), got)

    def action_release(self) -> None:
        ident = _selected(self.query_one("#exchanges", DataTable))
        if ident is None:
            self.tui.say("No exchange chosen.", error=True)
            return
        self.tui.perform(
            f"exchange release {ident[:8]}",
            lambda: self.tui.backend.json("exchange", "release", "--", ident),
            lambda _: f"Released exchange {ident[:8]}.",
        )


class FormScreen(ModalScreen[dict[str, str] | None]):
    """A few one-line fields; enter on the last one submits, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[tuple[str, str]]) -> None:
        super().__init__()
        self.heading = title
        self.fields = fields

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label(self.heading, classes="title", markup=False)
            for name, label in self.fields:
                yield Input(placeholder=label, id=f"field-{name}")
            yield Label("enter: next / submit   escape: cancel", markup=False)

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        at = inputs.index(event.input)
        if at + 1 < len(inputs):
            inputs[at + 1].focus()
            return
        self.dismiss(
            {name: self.query_one(f"#field-{name}", Input).value for name, _ in self.fields}
        )

    def action_cancel(self) -> None:
        self.dismiss(None)


HELP = """Keys (everything here is also a `backchannel` command)

everywhere    1 conversations  2 proposals  3 exercise  4 mediator
              g refresh  ? this help  q quit (not while typing)
conversations enter open thread   o open off-the-record   x close it
thread        w write  r reply to selected  a acknowledge (signed)
              o switch on/off the record   enter send   escape back
proposals     enter open  a accept  x reject  n counter  w withdraw
              k acknowledge  P new proposal
mediator      i introduce  f forward  r release the chosen exchange

OFF THE RECORD marks deniable channels; their messages live only in this
window's memory. Unread letters are marked read when their thread opens."""


class PassphraseScreen(ModalScreen[str | None]):
    """The keystore's passphrase, asked once; the window's commands get it in their
    environment (BACKCHANNEL_PASSPHRASE, readable only by this user), never on disk."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label("This profile's keystore is sealed with a passphrase.", markup=False)
            yield Input(placeholder="passphrase", password=True, id="passphrase")
            yield Label("enter: unlock   escape: go on without", markup=False)

    @on(Input.Submitted)
    def _done(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(HELP, markup=False, id="help")

    def action_close(self) -> None:
        self.dismiss(None)
