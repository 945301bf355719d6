"""The participant's view of its exercise: brief, scenario clock, channels, injects (PRODUCT.md §7).

The relay says which exercise a profile plays in (`GET /v1/exercise`); this module keeps the
last answer (sealed, so scenario time and channels show offline too), routes a message through
the mediator the scenario names when there is no direct channel (blind forwarding), refuses one
to a role the scenario gives no channel to before anything is stored, and turns control's
injects into messages once their signature checks against the control key pinned on first use.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from backchannel.errors import BackchannelError
from backchannel.exercise import Clock, Inject, scenario_time_text, verify_inject
from backchannel.keys import SigningPublicKey

from .errors import CliError, RelayRefusedError, RelayUnreachableError
from .localstore import Message
from .relay import RelayRequestError, unb64

if TYPE_CHECKING:
    from .service import Participant

EXERCISE_SECRET = "exercise"
CONTROL_SECRET = "control_key"


class Exercise:
    """Held by `Participant.exercise`; `view` is None outside an exercise."""

    def __init__(self, participant: Participant) -> None:
        self.participant = participant
        self.view: dict[str, Any] | None = self._stored()
        """The relay's last answer (read here, outside any transaction, so rendering a
        message inside one never opens a second)."""
        self._fetched = False

    async def refresh(self) -> dict[str, Any] | None:
        """Ask the relay (once per command unless asked again); offline, the last answer."""
        participant = self.participant
        view: dict[str, Any] | None
        try:
            view = await participant.authed(
                lambda: participant.relay.request("GET", "/v1/exercise")
            )
        except RelayRefusedError as exc:
            error = exc.error
            if not (isinstance(error, RelayRequestError) and error.code == "no_exercise"):
                raise
            view = None
        except RelayUnreachableError:
            self.view, self._fetched = self._stored(), True
            return self.view
        with participant.store.transaction() as db:
            if view is None:
                participant.store.delete_secret(db, EXERCISE_SECRET)
            else:
                participant.store.put_secret(db, EXERCISE_SECRET, json.dumps(view).encode())
        self.view, self._fetched = view, True
        return view

    async def ensure(self) -> dict[str, Any] | None:
        return self.view if self._fetched else await self.refresh()

    def _stored(self) -> dict[str, Any] | None:
        with self.participant.store.transaction() as db:
            raw = self.participant.store.get_secret(db, EXERCISE_SECRET)
        view: dict[str, Any] | None = json.loads(raw) if raw else None
        return view

    # --- channels -------------------------------------------------------------------------------

    async def via(self, to: str) -> str | None:
        """The mediator a message to `to` goes through, None for a direct one; a CliError when
        the scenario gives no channel to `to` at all."""
        view = await self.ensure()
        if view is None or to not in {r["name"] for r in view["roles"]}:
            return None
        channel = view["channels"].get(to)
        if channel is None:
            raise CliError(
                f"the exercise {view['exercise']} gives {self.participant.name} no channel to {to}"
            )
        return None if channel["direct"] else str(channel["via"])

    def direct(self, peer: str) -> bool:
        """Whether the exercise (as last heard) lets us write to `peer` directly; True outside
        an exercise. For sealed-sender traffic, which the relay cannot check (PROTOCOL.md §16.1)."""
        view = self.view
        if view is None or peer not in {r["name"] for r in view["roles"]}:
            return True
        channel = view["channels"].get(peer)
        return bool(channel and channel["direct"])

    # --- the clock ------------------------------------------------------------------------------

    def scenario_at(self, wall_ms: int) -> tuple[int, int] | None:
        """(scenario ms, UTC offset minutes) of a wall time, by the clock as last heard from
        the relay; recorded with a message when it is stored, never recomputed later."""
        view = self.view
        if view is None:
            return None
        clock = Clock.from_json(view["clock"])
        return clock.now(wall_ms), int(view["clock"]["utc_offset_minutes"])

    # --- injects --------------------------------------------------------------------------------

    async def take_injects(self) -> int:
        """Store the injects due by the relay's answer of this command (`ensure`: a caller that
        runs for long refreshes first) that are not stored yet; -> how many were new."""
        view = await self.ensure()
        if view is None or not view["injects"]:
            return 0
        key = await self._control_key()
        store, fresh = self.participant.store, 0
        with store.transaction() as db:
            for raw in view["injects"]:
                inject = Inject(
                    raw["number"], raw["at"], tuple(raw["to"]), raw["title"], raw["text"]
                )
                ident = hashlib.sha256(
                    f"inject {view['exercise']} {inject.number}".encode()
                ).hexdigest()[:32]
                if db.get(Message, ident) is not None:
                    continue
                try:
                    verify_inject(key, view["exercise"], inject, unb64(raw["signature"]))
                    verified = "signed by control"
                except (BackchannelError, ValueError):
                    verified = "BAD SIGNATURE"
                when = scenario_time_text(inject.at_ms, view["clock"]["utc_offset_minutes"])
                store.add_message(
                    db, f"{inject.title} (scenario time {when})\n{inject.text}", id=ident,
                    direction="in", peer="control", kind="inject", sent_at=now_ms(),
                    stored_at=now_ms(), status="delivered", verified=verified,
                    in_reply_to=None, scenario_at=inject.at_ms,
                    scenario_offset=view["clock"]["utc_offset_minutes"],
                )  # fmt: skip
                fresh += 1
        return fresh

    async def _control_key(self) -> SigningPublicKey:
        """The relay's control key, pinned on first use like the notary's."""
        participant = self.participant
        with participant.store.transaction() as db:
            pinned = participant.store.get_secret(db, CONTROL_SECRET)
        if pinned is None:
            info = await participant._call(participant.relay.info())
            try:
                pinned = unb64(info["control_key"])
            except (KeyError, TypeError, ValueError):
                raise CliError("the relay publishes no control key (/v1/info)") from None
            with participant.store.transaction() as db:
                participant.store.put_secret(db, CONTROL_SECRET, pinned)
        return SigningPublicKey.from_bytes(pinned)


def now_ms() -> int:
    return int(time.time() * 1000)
