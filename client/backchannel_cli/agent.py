"""The participant's agent: one long-lived process per profile holding the unlocked keystore
(like ssh-agent), answering the local API of `agent_protocol` on `agent.sock` in the profile
directory (0600, callers of another user refused by their peer credentials).

It is a fork server. The process that serves the socket stays single-threaded and does no I/O
of its own beyond the socket: each `cli.run` is a fork of it, so the command starts with every
module imported and the keystore open, runs the very code the command runs without an agent
on the caller's own descriptors, and exits. A second fork, the keeper, holds the relay's live
connection while nobody types (`Participant.keep`: store, acknowledge, delivery receipts,
timed proposals, a mediator's releases, injects, prekeys) and streams events to subscribers.
The local store stays the single source of truth: every fork commits there before it tells
anyone anything, so a crash or a SIGKILL of any of them at any moment loses nothing (the same
transactions as without an agent), and the next one takes up what was left.

Locking (on `agent lock`, or after the idle time without a command) ends the keeper and drops
the keystore's keys from this process; `agent stop` does the same and exits. Python cannot
promise that no copy of a key stays in freed memory: the keys are dropped and collected, the
memory is not zeroed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import agent_protocol as protocol

if TYPE_CHECKING:
    import click

    from .profile import Unlocked

MAX_COMMANDS = 32
"""Commands running at once; one more is answered BUSY and runs in its caller instead."""
MAX_SUBSCRIBERS = 16
FIRST_LINE_TIMEOUT = 2.0
"""How long a connection may take to send its request (the server waits for nobody else then)."""
KEEPER_RESTART_PAUSE = 2.0
PRELOADED = (
    "service", "render", "negotiation", "mediator", "offrecord", "exercising", "ids",
    "relay", "localstore", "archive", "report_check", "hints", "agent_keeper",
)  # fmt: skip
"""Modules imported before serving, so a command's fork finds them loaded."""


def preload() -> None:
    import importlib

    for name in PRELOADED:
        importlib.import_module(f"{__package__}.{name}")


class Agent:
    """The serving process: the socket, the forks it made, and the keystore while unlocked."""

    def __init__(
        self, directory: Path, unlocked: Unlocked, idle_lock: float, command: click.Command
    ) -> None:
        self.command = command
        """The `backchannel` command group itself, which each fork runs."""
        self.directory = directory.resolve()  # commands run in their callers' directories
        self.path = protocol.socket_path(self.directory)
        self.unlocked: Unlocked | None = unlocked
        self.idle_lock = idle_lock
        self.last_used = time.monotonic()
        self.started_at_ms = int(time.time() * 1000)
        self.commands_run = 0
        self.children: dict[int, socket.socket] = {}
        """A running command's pid -> its caller's connection (the exit code goes there)."""
        self.keeper: tuple[int, socket.socket] | None = None
        self.keeper_started = 0.0
        self.online = False
        self.stopping = False
        self.listener: socket.socket | None = None

    # --- serving ------------------------------------------------------------------------------

    def serve(self, ready: int | None = None) -> None:
        """Bind, tell `ready` (a pipe's write end) our pid, and answer until stopped."""
        self.listener = _bind(self.path)
        wake_read, wake_write = os.pipe()
        for fd in (wake_read, wake_write):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop_signal)
        self._start_keeper()
        if ready is not None:
            os.write(ready, f"{os.getpid()}\n".encode())
            os.close(ready)
        try:
            while not self.stopping:
                self._turn(wake_read)
        finally:
            self._shut_down()

    def _turn(self, wake: int) -> None:
        watched: list[Any] = [self.listener, wake, *self.children.values()]
        if self.keeper is not None:
            watched.append(self.keeper[1])
        timeout = None
        if self.unlocked is not None and self.idle_lock > 0:
            timeout = max(0.0, self.last_used + self.idle_lock - time.monotonic())
        try:
            readable, _, _ = select.select(watched, [], [], timeout)
        except InterruptedError:
            readable = []
        if wake in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake, 4096)
        self._reap()
        idle = time.monotonic() - self.last_used
        if self.unlocked is not None and 0 < self.idle_lock <= idle:
            self.lock()
        for pid, connection in list(self.children.items()):
            if connection in readable and not _peek(connection):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # its caller died: so does the command
        if self.keeper is not None and self.keeper[1] in readable:
            self._from_keeper()
        # A keeper that died is started again, after a pause.
        pause = time.monotonic() - self.keeper_started
        if self.keeper is None and self.unlocked is not None and not self.stopping and (
            pause >= KEEPER_RESTART_PAUSE
        ):
            self._start_keeper()
        if self.listener in readable:
            self._accept()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        if not _same_user(connection):
            with contextlib.suppress(OSError):
                connection.sendall(protocol.error(None, protocol.REFUSED, "another user"))
            connection.close()
            return
        connection.settimeout(FIRST_LINE_TIMEOUT)
        reader = protocol.LineReader(connection, max_fds=3)
        try:
            message = reader.next()
        except (OSError, ValueError, json.JSONDecodeError):
            message = None
        if message is None:
            reader.close_fds()
            connection.close()
            return
        keep = False
        try:
            keep = self._answer(connection, message, reader.fds)
        except OSError:
            pass
        finally:
            reader.close_fds()
            if not keep:
                connection.close()

    def _answer(self, connection: socket.socket, message: dict[str, Any], fds: list[int]) -> bool:
        """Answer one request -> whether the connection stays open (a running command's)."""
        ident = message.get("id")
        method = message.get("method")
        params = message.get("params") or {}
        if not isinstance(params, dict):
            connection.sendall(protocol.error(ident, protocol.REFUSED, "params must be an object"))
            return False
        if method == "cli.run":
            return self._run(connection, ident, params, fds)
        if method == "agent.status":
            connection.sendall(protocol.result(ident, self.status()))
        elif method == "agent.lock":
            self.lock()
            connection.sendall(protocol.result(ident, {"locked": True}))
        elif method == "agent.unlock":
            connection.sendall(self._unlock(ident, params.get("passphrase")))
        elif method == "agent.stop":
            connection.sendall(protocol.result(ident, {"stopping": True}))
            self.stopping = True
        elif method == "agent.events":
            return self._subscribe(connection, ident)
        else:
            connection.sendall(protocol.error(ident, -32601, f"no method {method!r}"))
        return False

    def status(self) -> dict[str, Any]:
        return {
            "running": True,
            "pid": os.getpid(),
            "profile": self.directory.name,
            "locked": self.unlocked is None,
            "online": self.online and self.keeper is not None,
            "started_at": self.started_at_ms,
            "idle_lock_seconds": self.idle_lock,
            "idle_seconds": round(time.monotonic() - self.last_used, 1),
            "commands_run": self.commands_run,
            "commands_running": len(self.children),
        }

    # --- commands -----------------------------------------------------------------------------

    def _run(
        self, connection: socket.socket, ident: Any, params: dict[str, Any], fds: list[int]
    ) -> bool:
        argv, cwd, env = params.get("argv"), params.get("cwd"), params.get("env")
        if not (
            isinstance(argv, list) and len(argv) <= protocol.MAX_ARGV
            and all(isinstance(a, str) for a in argv)
            and isinstance(cwd, str)
            and isinstance(env, dict) and len(env) <= protocol.MAX_ENV
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
            and len(fds) == 3
        ):  # fmt: skip
            connection.sendall(protocol.error(ident, protocol.REFUSED, "cli.run needs argv, "
                                              "cwd, env and three descriptors"))  # fmt: skip
            return False
        if self.unlocked is None:
            connection.sendall(protocol.error(ident, protocol.LOCKED, "the agent is locked"))
            return False
        if len(self.children) >= MAX_COMMANDS:
            connection.sendall(protocol.error(ident, protocol.BUSY, "too many commands at once"))
            return False
        pid = os.fork()
        if pid == 0:
            self._command(argv, cwd, env, fds)
        self.children[pid] = connection
        self.commands_run += 1
        self.last_used = time.monotonic()
        connection.settimeout(None)
        connection.sendall(protocol.notification("cli.started", {"pid": pid}))
        return True

    def _command(self, argv: list[str], cwd: str, env: dict[str, str], fds: list[int]) -> NoReturn:
        """In the fork: become the command, on the caller's descriptors, in its directory and
        environment, exactly as `backchannel ARGV` would run there."""
        code = 1
        try:
            self._forget_server()
            for target, fd in zip((0, 1, 2), fds, strict=True):
                os.dup2(fd, target)
                os.close(fd)
            encoding = sys.stdout.encoding
            sys.stdin = open(0, encoding=encoding, closefd=False)  # noqa: SIM115
            sys.stdout = open(1, "w", encoding=encoding, closefd=False,  # noqa: SIM115
                              buffering=1 if os.isatty(1) else -1)  # fmt: skip
            sys.stderr = open(2, "w", encoding=encoding, errors="backslashreplace",  # noqa: SIM115
                              closefd=False, buffering=1)  # fmt: skip
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
            from .profile import OPEN_KEYSTORES

            assert self.unlocked is not None
            OPEN_KEYSTORES[self.directory] = self.unlocked
            try:
                self.command.main(args=argv, prog_name="backchannel", standalone_mode=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # the fork must never return into the server's loop
            with contextlib.suppress(Exception):
                os.write(2, f"Error: the agent could not run the command: {exc}\n".encode())
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _forget_server(self) -> None:
        """In a fork: drop the server's sockets and signal handling."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for held in [self.listener, *self.children.values()]:
            if held is not None:
                held.close()
        if self.keeper is not None:
            self.keeper[1].close()
        self.children, self.keeper = {}, None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            connection = self.children.pop(pid, None)
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.sendall(protocol.result(1, {"exit_code": 128 - code if code < 0
                                                           else code}))  # fmt: skip
                connection.close()
                self._tell_keeper(b"changed\n")
            elif self.keeper is not None and pid == self.keeper[0]:
                self.keeper[1].close()
                self.keeper, self.online = None, False

    # --- the keeper ---------------------------------------------------------------------------

    def _start_keeper(self) -> None:
        if self.unlocked is None:
            return
        ours, theirs = socket.socketpair()
        self.keeper_started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            ours.close()
            self._forget_server()
            from .agent_keeper import run_keeper

            code = 1
            try:
                run_keeper(self.unlocked, theirs)
                code = 0
            finally:
                os._exit(code)
        theirs.close()
        self.keeper = (pid, ours)

    def _from_keeper(self) -> None:
        assert self.keeper is not None
        try:
            data = self.keeper[1].recv(4096)
        except OSError:
            data = b""
        for line in data.split(b"\n"):
            if line in (b"online", b"offline"):
                self.online = line == b"online"

    def _tell_keeper(self, message: bytes, fds: list[int] | None = None) -> bool:
        if self.keeper is None:
            return False
        try:
            if fds:
                socket.send_fds(self.keeper[1], [message], fds)
            else:
                self.keeper[1].sendall(message)
        except OSError:
            return False
        return True

    def _subscribe(self, connection: socket.socket, ident: Any) -> bool:
        if self.keeper is None:
            code = protocol.LOCKED if self.unlocked is None else protocol.BUSY
            connection.sendall(protocol.error(ident, code, "no keeper runs (locked or starting)"))
            return False
        connection.sendall(protocol.result(ident, {"subscribed": True}))
        self._tell_keeper(b"subscribe\n", [connection.fileno()])
        return False  # the keeper holds it now; our copy closes

    # --- locking and stopping -----------------------------------------------------------------

    def lock(self) -> None:
        """End the keeper and drop the keys (as far as Python allows: collected, not zeroed)."""
        if self.keeper is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.keeper[0], signal.SIGTERM)
        self.unlocked = None
        gc.collect()

    def _unlock(self, ident: Any, passphrase: object) -> bytes:
        from .errors import CliError
        from .profile import unlock

        if self.unlocked is None:
            if passphrase is not None and not isinstance(passphrase, str):
                return protocol.error(ident, protocol.REFUSED, "the passphrase must be a string")
            try:
                self.unlocked = unlock(self.directory, passphrase)
            except CliError as exc:
                return protocol.error(ident, protocol.REFUSED, exc.message)
            self.last_used = time.monotonic()
            self._start_keeper()
        return protocol.result(ident, {"locked": False})

    def _stop_signal(self, _signum: int, _frame: Any) -> None:
        self.stopping = True

    def _shut_down(self) -> None:
        self.lock()
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self.listener is not None:
            self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _bind(path: Path) -> socket.socket:
    """Listen on `path` (0600), replacing a socket no agent answers on any more."""
    if path.is_socket():
        try:
            protocol.connect(path).close()
        except OSError:
            path.unlink()
        else:
            raise RuntimeError(f"an agent already runs on {path}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        with protocol.short_address(path) as address:
            listener.bind(address)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    listener.listen(64)
    return listener


def _same_user(connection: socket.socket) -> bool:
    """The caller's peer credentials (SO_PEERCRED) name this process's user."""
    try:
        raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", raw)
    return bool(uid == os.getuid())


def _peek(connection: socket.socket) -> bool:
    """Whether a caller that became readable is still there (False: it closed or died)."""
    try:
        return bool(connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True
    except OSError:
        return False


def daemonize(agent: Agent) -> int:
    """Start `agent` as a daemon (its own session, no terminal) -> its pid once it serves."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.close(null)
        code = 1
        try:
            agent.serve(ready=write_end)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with open(read_end, "rb") as ready:
        line = ready.readline()
    os.waitpid(pid, os.WNOHANG)
    if not line.strip().isdigit():
        raise OSError("the agent did not start")
    return int(line)
