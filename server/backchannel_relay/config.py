"""The relay's configuration: one object, filled from flags or environment variables.

This module imports nothing heavy (the database layer is imported when first needed), so that
`backchannel-relay` reaches its own code, and its handling of Ctrl-C, at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    from .drops import DropLimits
    from .limits import RateLimit
    from .store import Limits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
DEFAULT_MAX_OTR_TTL = 24 * 3600
"""The longest an off-the-record channel (its drops) may live, in seconds."""


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("backchannel-relay", appauthor=False))


def _limits() -> Limits:
    from .store import Limits

    return Limits()


def _drops() -> DropLimits:
    from .drops import DropLimits

    return DropLimits()


def _rate() -> RateLimit:
    from .limits import RateLimit

    return RateLimit()


def _public_rate() -> RateLimit:
    from .limits import RateLimit

    return RateLimit(300.0, 5.0)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    """None: one SQLite file in `data_dir`."""
    access_log: bool = True
    limits: Limits = field(default_factory=_limits)
    drops: DropLimits = field(default_factory=_drops)
    rate: RateLimit = field(default_factory=_rate)
    public_rate: RateLimit = field(default_factory=_public_rate)
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
        from .database import sqlite_url

        return self.database_url or sqlite_url(self.data_dir)

    def store_label(self) -> str:
        """The store as a user names it: the SQLite file's path, or the database URL without
        the driver and without the password."""
        from .database import public_store_url

        return public_store_url(self.url)

    def describe_store(self) -> str:
        """`SQLite file PATH` or `PostgreSQL database URL`, for one line of output."""
        kind = "SQLite file" if self.url.startswith("sqlite") else "PostgreSQL database"
        return f"{kind} {self.store_label()}"
