"""The relay's configuration: one object, filled from flags or environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .database import sqlite_url
from .drops import DropLimits
from .limits import RateLimit
from .store import Limits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("backchannel-relay", appauthor=False))


@dataclass(frozen=True, slots=True)
class RelayConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    """None: one SQLite file in `data_dir`."""
    access_log: bool = True
    limits: Limits = field(default_factory=Limits)
    drops: DropLimits = field(default_factory=DropLimits)
    rate: RateLimit = field(default_factory=RateLimit)
    public_rate: RateLimit = field(default_factory=lambda: RateLimit(300.0, 5.0))
    """Per client address, for the unauthenticated POSTs: a classroom behind one NAT address
    registers and logs in forty participants (three requests each) in one burst."""
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 256
    max_connections_per_participant: int = 8
    max_connections: int = 10_000
    sweep_interval: float = 60.0
    invite_ttl: int = 7 * 24 * 3600

    @property
    def url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)

    def describe_store(self) -> str:
        if self.database_url is None:
            return f"SQLite file {self.data_dir / 'relay.sqlite3'}"
        scheme = self.database_url.split("://", 1)[0]
        host = self.database_url.rsplit("@", 1)[-1]  # never print a password
        return f"{scheme} database at {host}"
