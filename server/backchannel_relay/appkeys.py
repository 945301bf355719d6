"""Typed keys for what the application shares between handlers (aiohttp `web.AppKey`)."""

from __future__ import annotations

from aiohttp import web

from .config import RelayConfig
from .delivery import GroupCommitter, Hub, Sockets
from .drops import Drops
from .exercises import Exercises
from .limits import ConnectionGate, IdentityLimiter, RateLimiter
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
PUBLIC_LIMITER = web.AppKey("public_limiter", RateLimiter)
"""Unauthenticated POSTs (register, challenge, token, admin), per client address."""
GATE = web.AppKey("gate", ConnectionGate)
RELAY_ID = web.AppKey("relay_id", bytes)
NOTARY = web.AppKey("notary", Notary)
DROPS = web.AppKey("drops", Drops)
EXERCISES = web.AppKey("exercises", Exercises)
ADMIN_TOKEN_HASH = web.AppKey("admin_token_hash", bytes)

PARTICIPANT = "backchannel.participant"


def participant(request: web.Request) -> ParticipantInfo:
    """The authenticated caller (set by the auth middleware)."""
    info: ParticipantInfo = request[PARTICIPANT]
    return info
