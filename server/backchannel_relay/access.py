"""What a participant's registration role lets it do, and how fast others may take its prekeys.

The exercise policy (`exercises.py`) says who may write to whom inside an exercise; the role a
participant registered with holds everywhere, inside an exercise or not: observers receive, and
send nothing (PRODUCT.md §1), so every route that sends, opens a channel, notarises or starts a
session refuses them (403 `role_forbids`).

A prekey bundle hands out one of the owner's one-time prekeys, which no one can give back: a
correspondent fetching bundles in a loop pushes every new session onto the last-resort keys. So
bundle fetches are limited per fetcher, per target and per pair, and the owner hears how many
were taken lately (`GET /v1/prekeys`). All of it lives in this process's memory, in bounded
tables, and nothing of it is written down (PROTOCOL.md §13.5).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import Forbidden, TooManyRequests
from .limits import RateLimit, RateLimiter
from .store import ParticipantInfo

RECEIVE_ONLY = frozenset({"observer"})
"""Registration roles that receive and send nothing."""


def require_sender(who: ParticipantInfo, what: str) -> None:
    """Refuse (403 `role_forbids`) a participant whose role sends nothing."""
    if who.role in RECEIVE_ONLY:
        raise Forbidden(
            f"{who.name} is registered as an observer, and observers only receive: they do "
            f"not {what}",
            code="role_forbids",
        )


@dataclass(frozen=True, slots=True)
class BundleLimits:
    per_pair: RateLimit = field(default_factory=lambda: RateLimit(4.0, 1 / 600))
    """One fetcher, one target: a client takes one bundle per new session, so four, then one
    more every ten minutes."""
    per_fetcher: RateLimit = field(default_factory=lambda: RateLimit(64.0, 1 / 10))
    """Everyone a mediator of a forty-role exercise writes to, at once; then one in 10 s."""
    per_target: RateLimit = field(default_factory=lambda: RateLimit(64.0, 1 / 60))
    """Everyone of a forty-role exercise writing to one role at once; then one a minute."""
    window: float = 3600.0
    """How far back `GET /v1/prekeys` counts bundles taken (seconds)."""
    repeat_warning: int = 3
    """A fetcher taking more than this many of one target's bundles in the window is draining
    them (a client takes one per new session)."""
    volume_warning: int = 50
    """So many bundles taken in the window is draining, whoever took them."""
    max_targets: int = 100_000
    """Targets remembered (least recently fetched forgotten first)."""

    @classmethod
    def with_bursts(cls, burst: float, pair_burst: float) -> BundleLimits:
        """The defaults' refill rates with other bursts (per fetcher and per target; per pair)."""
        default = cls()
        return cls(
            RateLimit(pair_burst, default.per_pair.per_second),
            RateLimit(burst, default.per_fetcher.per_second),
            RateLimit(burst, default.per_target.per_second),
        )


class BundleGuard:
    """The limits on bundle fetches, and the record of recent ones each owner is told of."""

    def __init__(
        self, limits: BundleLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or BundleLimits()
        self.clock = clock
        self._pairs = RateLimiter(self.limits.per_pair)
        self._fetchers = RateLimiter(self.limits.per_fetcher)
        self._targets = RateLimiter(self.limits.per_target)
        self._taken: OrderedDict[int, deque[tuple[float, int]]] = OrderedDict()
        """target -> (when, fetcher) for each bundle taken within the window, oldest first."""

    def admit(self, fetcher: int, target: ParticipantInfo) -> None:
        """Spend one fetch of the pair's, the fetcher's and the target's buckets, or raise 429
        `prekey_fetch_limited` with how long to wait."""
        for limiter, key, whose in (
            (self._pairs, (fetcher, target.id), f"of {target.name}'s by you"),
            (self._fetchers, fetcher, "by you"),
            (self._targets, target.id, f"of {target.name}'s"),
        ):
            try:
                limiter.take(key)
            except TooManyRequests as exc:
                raise TooManyRequests(
                    f"too many prekey bundles fetched {whose} lately (each takes one of the "
                    "owner's one-time prekeys); retry later",
                    retry_after=exc.retry_after,
                    code="prekey_fetch_limited",
                ) from None

    def taken(self, fetcher: int, target: int) -> None:
        """Remember that `fetcher` was handed one of `target`'s bundles."""
        now = self.clock()
        recent = self._taken.pop(target, None)
        if recent is None:
            recent = deque()
            if len(self._taken) >= self.limits.max_targets:
                self._taken.popitem(last=False)
        self._prune(recent, now)
        recent.append((now, fetcher))
        self._taken[target] = recent

    def report(self, target: int) -> dict[str, object]:
        """What the owner is told: bundles taken within the window, and whether that looks like
        draining (one fetcher taking many, or many taken in all)."""
        recent = self._taken.get(target)
        if recent is None:
            return {"taken_last_hour": 0, "draining": False}
        self._prune(recent, self.clock())
        per_fetcher: dict[int, int] = {}
        for _, fetcher in recent:
            per_fetcher[fetcher] = per_fetcher.get(fetcher, 0) + 1
        draining = len(recent) >= self.limits.volume_warning or any(
            count > self.limits.repeat_warning for count in per_fetcher.values()
        )
        return {"taken_last_hour": len(recent), "draining": draining}

    def _prune(self, recent: deque[tuple[float, int]], now: float) -> None:
        while recent and now - recent[0][0] > self.limits.window:
            recent.popleft()
