"""Typed keys for what the application shares between handlers (aiohttp `web.AppKey`)."""

from __future__ import annotations

from aiohttp import web

from .access import BundleGuard
from .config import RelayConfig
from .delivery import GroupCommitter, Hub, Sockets
from .drops import Drops
from .exercises import Exercises
from .limits import BodyBudget, ClientAddresses, ConnectionGate, IdentityLimiter, RateLimiter
from .metrics import Metrics
from .notary import Notary
from .store import ParticipantInfo, Store

CONFIG = web.AppKey("config", RelayConfig)
STORE = web.AppKey("store", Store)
HUB = web.AppKey("hub", Hub)
SOCKETS = web.AppKey("sockets", Sockets)
"""The open WebSockets, closed as "going away" when the relay stops."""
COMMITTER = web.AppKey("committer", GroupCommitter)
METRICS = web.AppKey("metrics", Metrics)
LIMITER = web.AppKey("limiter", IdentityLimiter)
"""Per identity: in memory on SQLite, in the database on PostgreSQL (`limits.py`)."""
SEND_LIMITER = web.AppKey("send_limiter", IdentityLimiter)
"""Per identity and envelope sent (`RelayConfig.send_rate`); stored like `LIMITER`."""
READ_LIMITER = web.AppKey("read_limiter", IdentityLimiter)
"""Per identity, for reading one's own mailbox (`RelayConfig.read_rate`); stored like `LIMITER`."""
PUBLIC_LIMITER = web.AppKey("public_limiter", RateLimiter)
"""Per client address, in memory: unauthenticated requests and every refused one (`app.py`)."""
CLIENT_ADDRESSES = web.AppKey("client_addresses", ClientAddresses)
BODY_BUDGET = web.AppKey("body_budget", BodyBudget)
GATE = web.AppKey("gate", ConnectionGate)
RELAY_ID = web.AppKey("relay_id", bytes)
NOTARY = web.AppKey("notary", Notary)
DROPS = web.AppKey("drops", Drops)
EXERCISES = web.AppKey("exercises", Exercises)
ADMIN_TOKEN_HASH = web.AppKey("admin_token_hash", bytes)
BUNDLES = web.AppKey("bundles", BundleGuard)
"""The limits on prekey bundle fetches, and the recent fetches each owner is told of."""

PARTICIPANT = "backchannel.participant"
CLIENT = "backchannel.client"
"""The request's client address as the per-address limit counts it (memory only, never logged)."""
BODY_HELD = "backchannel.body_held"
"""(holder, bytes) of `BODY_BUDGET` this request holds until it is answered."""


def participant(request: web.Request) -> ParticipantInfo:
    """The authenticated caller (set by the auth middleware)."""
    info: ParticipantInfo = request[PARTICIPANT]
    return info
