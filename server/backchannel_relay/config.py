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
    from .access import BundleLimits
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

    return DropLimits(max_ttl=DEFAULT_MAX_OTR_TTL)


def _rate() -> RateLimit:
    from .limits import RateLimit

    return RateLimit()


def _send_rate() -> RateLimit:
    from .limits import RateLimit

    return RateLimit(256.0, 1.0)


def _read_rate() -> RateLimit:
    from .limits import RateLimit

    return RateLimit(1000.0, 20.0)


def _bundles() -> BundleLimits:
    from .access import BundleLimits

    return BundleLimits()


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
    bundles: BundleLimits = field(default_factory=_bundles)
    """Prekey bundle fetches per fetcher, per target and per pair (`access.py`)."""
    rate: RateLimit = field(default_factory=_rate)
    """Per identity, one token per request, for every authenticated route but the two below."""
    send_rate: RateLimit = field(default_factory=_send_rate)
    """Per identity, one token per envelope sent (POST /v1/messages): a batch of 256 costs 256.
    The burst bounds a request's envelopes too (`max_batch` is the smaller of the two)."""
    read_rate: RateLimit = field(default_factory=_read_rate)
    """Per identity, one token per request reading or acknowledging one's own mailbox (GET
    /v1/messages, POST /v1/messages/ack, GET /v1/ws): never spent by sending, and enough to
    drain a full mailbox (10,000 envelopes are 100 pages of 100 and their acknowledgements)."""
    public_rate: RateLimit = field(default_factory=_public_rate)
    """Per client address, for unauthenticated requests, in memory (a refusal costs more, see
    `app.FAILURE_COST`): a classroom behind one NAT address registers and logs in forty
    participants (three requests each, and forty invites) in one burst."""
    max_body_bytes: int = 64 * 1024
    """A request body on every route but the few that carry envelopes or prekeys (their limits
    are derived from the protocol's maxima in `wire.body_limit`)."""
    max_send_body_bytes: int = 8 * 1024 * 1024
    """A body of `POST /v1/messages`: a batch holds up to `max_batch` envelopes and this many
    bytes, whichever comes first (at most 63 envelopes of the largest size)."""
    body_timeout: float = 30.0
    """Seconds a client has to send a request body, whatever its size (then 408)."""
    body_memory: int = 64 * 1024 * 1024
    """Bytes of request bodies held at once by the whole process, an eighth of it (but at least
    one largest body) by one caller (then 429 `relay_busy`)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or CIDR blocks of reverse proxies whose `X-Forwarded-For` is believed."""
    max_rate_keys: int = 100_000
    """Buckets each in-memory limit (per address, per drop) holds at most."""
    max_batch: int = 256
    max_connections_per_participant: int = 8
    max_connections: int = 10_000
    sweep_interval: float = 60.0
    invite_ttl: int = 7 * 24 * 3600
    allow_unsafe_commit: bool = False
    """Serve a PostgreSQL server with `fsync` or `synchronous_commit` off (receipts then
    precede the sync: `database.commit_durability`)."""

    @property
    def batch_limit(self) -> int:
        """Envelopes per send request: `max_batch`, or fewer if the send burst is smaller (a
        larger batch could never be paid for)."""
        return max(1, min(self.max_batch, int(self.send_rate.burst)))

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
