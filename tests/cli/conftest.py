"""End-to-end fixtures: a real relay as a subprocess on a free port, and participants who drive
the `backchannel` CLI the way a user does (in-process through click's CliRunner for speed, or
through the installed console script).

Every participant lives in its own profile under one temporary BACKCHANNEL_HOME; profiles are
created with `--no-passphrase` unless a test is about the passphrase.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from backchannel_cli.cli import main as cli_main
from backchannel_cli.commandline import PASSPHRASE_ENV
from backchannel_cli.service import WATCHING
from backchannel_relay.cli import main as relay_main
from tests.relay.conftest import _postgres


def _script(name: str) -> str:
    """The installed console script next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    assert found is not None, f"console script {name!r} is not installed"
    return found


CLI_SCRIPT = _script("backchannel")
RELAY_SCRIPT = _script("backchannel-relay")
START_TIMEOUT = 20.0
GENEROUS = (
    *("--rate-burst", "10000", "--rate-per-second", "1000", "--public-rate-burst", "10000"),
    *("--send-burst", "10000", "--send-per-second", "1000"),
    *("--prekey-fetch-burst", "10000", "--prekey-fetch-pair-burst", "10000"),
)
_serial = itertools.count(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def assert_one_error_line(output: str) -> str:
    """A user-facing failure: exactly one readable line, `Error: ...`, and no traceback."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{output}"
    assert lines[0].startswith("Error: "), output
    return lines[0]


class Relay:
    """`backchannel-relay serve` on 127.0.0.1:PORT with its SQLite store in `data_dir`."""

    def __init__(
        self, data_dir: Path, port: int | None = None, *extra: str, access_log: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra = extra
        self.access_log = access_log
        self.log = data_dir.with_name(data_dir.name + ".log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        assert self.process is None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    RELAY_SCRIPT,
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    *(() if self.access_log else ("--no-access-log",)),
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the relay exited early:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as answer:
                    if json.load(answer) == {"status": "ok"}:
                        return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"the relay did not become healthy:\n{self.log.read_text()}")

    def kill9(self) -> None:
        """What a power cut does: SIGKILL, no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def websockets(self) -> int:
        """Open WebSocket connections, from the relay's own metrics."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as answer:
            text = answer.read().decode()
        found = re.search(r"^backchannel_relay_websockets ([0-9.]+)$", text, re.M)
        assert found is not None, text
        return int(float(found.group(1)))

    def wait_for_websockets(self, count: int, timeout: float = 15.0) -> None:
        eventually(lambda: self.websockets() == count, timeout, f"{count} WebSocket(s) open")

    def invite(self, name: str, role: str = "party") -> str:
        """`backchannel-relay invite NAME --role ROLE --data-dir DIR --json`, as control runs it."""
        store = ["--data-dir", str(self.data_dir)]
        if "--database" in self.extra:  # the same store the relay serves
            store += ["--database", self.extra[self.extra.index("--database") + 1]]
        result = CliRunner().invoke(relay_main, ["invite", name, "--role", role, *store, "--json"])
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout)
        assert answer["name"] == name and answer["role"] == role
        return str(answer["invite"])


class User:
    """One participant: a profile under `home` that runs `backchannel --profile NAME ...`."""

    def __init__(self, home: Path, profile: str, name: str | None = None) -> None:
        self.home = home
        self.profile = profile
        self.name = name or profile
        self.fingerprint = ""

    @property
    def directory(self) -> Path:
        return self.home / "profiles" / self.profile

    def argv(self, *args: str) -> list[str]:
        return ["--home", str(self.home), "--profile", self.profile, *args]

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        result = CliRunner().invoke(cli_main, self.argv(*args), input=input, env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"`backchannel {' '.join(args)}` raised") from result.exception
        return result

    def ok(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
        result = self.run(*args, input=input, env=env)
        assert result.exit_code == 0, f"`backchannel {' '.join(args)}`: {result.output}"
        return result.stdout

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", env=env))

    def fails(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
        """Run a command that must fail the user-facing way; returns its `Error: ...` line."""
        result = self.run(*args, input=input, env=env)
        assert result.exit_code != 0, f"`backchannel {' '.join(args)}` succeeded: {result.output}"
        return assert_one_error_line(result.output)

    # --- the common steps -----------------------------------------------------------------------

    def init(self, relay: Relay | str, passphrase: str | None = None) -> dict[str, Any]:
        url = relay if isinstance(relay, str) else relay.url
        if passphrase is None:
            created = self.json("init", self.name, "--relay", url, "--no-passphrase")
        else:
            created = self.json("init", self.name, "--relay", url, env={PASSPHRASE_ENV: passphrase})
        assert created["name"] == self.name and created["encrypted"] is (passphrase is not None)
        self.fingerprint = created["fingerprint"]
        return dict(created)

    def register(self, relay: Relay, role: str = "party") -> None:
        registered = self.json("register", relay.invite(self.name, role))
        assert registered["name"] == self.name and registered["role"] == role
        assert registered["fingerprint"] == self.fingerprint

    def send(self, to: User | str, text: str, *extra: str) -> str:
        sent = self.json("send", to if isinstance(to, str) else to.name, text, *extra)
        assert sent["text"] == text and sent["from"] == "me"
        return str(sent["id"])

    def inbox(self, *extra: str) -> list[dict[str, Any]]:
        messages = self.json("inbox", *extra)
        assert isinstance(messages, list)
        return messages

    def status(self, message_id: str) -> str:
        return str(self.json("show", message_id)["status"])


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the developer's shell leaks into a test."""
    for variable in ("BACKCHANNEL_HOME", "BACKCHANNEL_PROFILE", PASSPHRASE_ENV):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(scope="session")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """One relay for every test that leaves it running; each test registers its own names.

    Its rate limit is raised so that a test's burst of commands is never throttled (the limit
    itself is tested on a relay of its own)."""
    running = Relay(tmp_path_factory.mktemp("shared") / "relay", None, *GENEROUS).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def own_relay(tmp_path: Path) -> Iterator[Relay]:
    """A relay this test alone uses, so it may kill, stop and restart it."""
    running = Relay(tmp_path / "relay", None, *GENEROUS).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def make_relay(tmp_path: Path) -> Iterator[Any]:
    """Start further relays (other flags, or a fresh store on a given port)."""
    started: list[Relay] = []

    def make(name: str, *extra: str, port: int | None = None, access_log: bool = False) -> Relay:
        started.append(Relay(tmp_path / name, port, *extra, access_log=access_log).start())
        return started[-1]

    try:
        yield make
    finally:
        for running in started:
            running.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, ...]]:
    """The relay's store: its embedded SQLite, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield ()
        return
    for backend in _postgres(tmp_path / "postgres"):
        yield tuple(backend.store_args)


def unique(name: str) -> str:
    """A participant name no other test registers on the shared relay."""
    return f"{name}-{next(_serial)}"


def participants(relay: Relay, home: Path, *names_and_roles: tuple[str, str]) -> list[User]:
    """Registered participants whose names are unique on `relay` (`kennedy-7`); each one's
    profile is named after the plain name (`--profile kennedy`)."""
    serial = next(_serial)
    users = []
    for name, role in names_and_roles:
        user = User(home, name, f"{name}-{serial}")
        user.init(relay)
        user.register(relay, role)
        users.append(user)
    return users


TRIO = (("kennedy", "party"), ("khrushchev", "party"), ("u-thant", "mediator"))


@pytest.fixture
def trio(relay: Relay, home: Path) -> tuple[User, User, User]:
    """Kennedy and Khrushchev (parties) and U Thant (mediator), registered, not yet verified."""
    kennedy, khrushchev, u_thant = participants(relay, home, *TRIO)
    return kennedy, khrushchev, u_thant


@pytest.fixture
def own_trio(own_relay: Relay, home: Path) -> tuple[User, User, User]:
    """The same three on a relay of this test's own."""
    kennedy, khrushchev, u_thant = participants(own_relay, home, *TRIO)
    return kennedy, khrushchev, u_thant


def eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def script_env(**extra: str) -> dict[str, str]:
    """The environment for a console-script run: this one, minus our settings, plus `extra`."""
    drop = {"BACKCHANNEL_HOME", "BACKCHANNEL_PROFILE", PASSPHRASE_ENV}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


class Watcher:
    """`backchannel inbox --watch` through the installed console script, read line by line."""

    def __init__(self, user: User, *extra: str) -> None:
        self.process = subprocess.Popen(
            [CLI_SCRIPT, *user.argv("inbox", "--watch", *extra)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=script_env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put)),
            threading.Thread(target=self._pump, args=(self.process.stderr, self.errors.append)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    @staticmethod
    def _pump(stream: Any, put: Callable[[str], None]) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def line(self, timeout: float = 15.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"the watch printed nothing in {timeout} s; stderr: {self.errors}")

    def wait_for_notice(self, text: str, count: int = 1, timeout: float = 15.0) -> None:
        """Until the watch has said `text` on stderr `count` times (it says when it connects)."""
        eventually(
            lambda: sum(text in line for line in self.errors) >= count,
            timeout,
            f"{text!r} from the watch; it said {self.errors}",
        )

    def connected(self) -> Watcher:
        self.wait_for_notice(WATCHING)
        return self

    def message(self, timeout: float = 15.0) -> dict[str, Any]:
        """The next message of a `--json` watch (one JSON object per line)."""
        value = json.loads(self.line(timeout))
        assert isinstance(value, dict)
        return value

    def nothing_more(self, wait: float = 0.5) -> None:
        time.sleep(wait)
        assert self.lines.empty(), f"unexpected output: {self.lines.get()}"

    def stop(self) -> str:
        """Terminate the watch (as a supervisor would) and return what it wrote to stderr."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for reader in self._readers:
            reader.join(5)
        return "\n".join(self.errors)


@pytest.fixture
def watch() -> Iterator[Callable[..., Watcher]]:
    started: list[Watcher] = []

    def start(user: User, *extra: str) -> Watcher:
        started.append(Watcher(user, *extra))
        return started[-1]

    try:
        yield start
    finally:
        for watcher in started:
            watcher.stop()
