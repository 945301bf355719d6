"""The agent's local API: JSON-RPC 2.0, one object per line, over a Unix domain socket in the
profile directory. Standard library only: the `backchannel` entry point imports this module
before deciding whether to import anything heavier.

Methods (README, "The agent"): `agent.status`, `agent.lock`, `agent.unlock {passphrase}`,
`agent.stop`, `agent.events` (then `event` notifications, one per line, for as long as the
connection stays open) and `cli.run {argv, cwd, env}` with the caller's standard input, output
and error passed as file descriptors (SCM_RIGHTS): the agent runs the command on them (a
`cli.started {pid}` notification, then the result `{exit_code}`), so what it prints, asks and
returns is what the same command prints, asks and returns without the agent.
"""

from __future__ import annotations

import array
import json
import os
import socket
from pathlib import Path
from typing import Any

SOCKET_FILE = "agent.sock"
MAX_LINE = 1024 * 1024
"""Longest JSON-RPC line either side accepts (a command line and its environment fit easily)."""
MAX_ARGV = 1024
MAX_ENV = 4096
CONNECT_TIMEOUT = 2.0
LOCKED = -32002
"""JSON-RPC error code: the agent is locked (its keystore closed); `agent.unlock` opens it."""
BUSY = -32003
"""JSON-RPC error code: too many commands running at once; the caller runs the command itself."""
REFUSED = -32004
"""JSON-RPC error code: the request is not one the agent takes (wrong passphrase, bad params)."""
UNIX_PATH_MAX = 100


def default_home() -> Path:
    import platformdirs

    return Path(os.environ.get("BACKCHANNEL_HOME") or platformdirs.user_data_dir("backchannel"))


def socket_path(profile_directory: Path) -> Path:
    return profile_directory / SOCKET_FILE


def connect(path: Path, timeout: float | None = CONNECT_TIMEOUT) -> socket.socket:
    """A connected socket to the agent at `path`; OSError when none listens there. A path too
    long for a Unix socket address is reached through `/proc/self/fd` of its directory."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with short_address(path) as address:
            sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


class short_address:
    """`path` as a Unix socket address: itself when short enough, else through an open
    descriptor of its directory (Linux), closed on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> str:
        if len(os.fsencode(str(self.path))) <= UNIX_PATH_MAX:
            return str(self.path)
        self.fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self.fd}/{self.path.name}"

    def __exit__(self, *_exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def request(method: str, params: dict[str, Any] | None = None, ident: int = 1) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
    if params is not None:
        message["params"] = params
    return encode(message)


def notification(method: str, params: dict[str, Any]) -> bytes:
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


def result(ident: Any, value: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "id": ident, "result": value})


def error(ident: Any, code: int, message: str) -> bytes:
    return encode({"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}})


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def send_with_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """Send `data`, the descriptors riding on its first bytes."""
    sent = sock.sendmsg(
        [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    )
    if sent < len(data):
        sock.sendall(data[sent:])


class LineReader:
    """JSON lines from a socket, each at most MAX_LINE bytes; the descriptors that came with the
    first bytes are kept in `fds` (at most `max_fds`)."""

    def __init__(self, sock: socket.socket, max_fds: int = 0) -> None:
        self.sock = sock
        self.max_fds = max_fds
        self.fds: list[int] = []
        self.buffer = b""

    def next(self) -> dict[str, Any] | None:
        """The next message; None at the end of the stream. ValueError for a line too long or
        not a JSON object."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ValueError("line too long")
            chunk = self._receive()
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        if len(line) > MAX_LINE:
            raise ValueError("line too long")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        return message

    def _receive(self) -> bytes:
        if self.max_fds and not self.fds:
            space = socket.CMSG_SPACE(self.max_fds * array.array("i").itemsize)
            data, ancillary, _, _ = self.sock.recvmsg(65536, space)
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self.fds.extend(fds)
            return data
        return self.sock.recv(65536)

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def call(path: Path, method: str, params: dict[str, Any] | None = None,
         timeout: float = 30.0) -> Any:  # fmt: skip
    """One JSON-RPC call to the agent at `path` -> its result; AgentError for its error, OSError
    when no agent answers."""
    with connect(path, timeout) as sock:
        sock.sendall(request(method, params))
        answer = LineReader(sock).next()
    if answer is None:
        raise OSError("the agent closed the connection")
    if "error" in answer:
        failure = answer["error"]
        raise AgentError(int(failure.get("code", 0)), str(failure.get("message", "")))
    return answer.get("result")


class AgentError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
