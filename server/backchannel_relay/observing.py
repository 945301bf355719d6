"""An observer's read-only view of the exercise as one named party sees it (PRODUCT.md §7).

Control grants it (`backchannel-relay exercise observe OBSERVER --as PARTY`); the grant lives in
`relay_meta` (no migration), keyed by a hash of the observer's name so any name fits the key.
The view never shows more than control may see of that party's traffic: per class and pair the
scenario's `control_sees` (envelope: who wrote to whom and when; existence: a count only;
nothing: nothing). Content is never shown (control copies are not read here). Off-the-record
drops cannot be tied to a party, and sealed-sender envelopes name no sender, so neither counts.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import or_, select

from backchannel.envelope import Envelope
from backchannel.errors import BackchannelError
from backchannel.exercise import Visibility

from .errors import BadRequest, Forbidden, NotFound
from .exercises import Exercises
from .models import EnvelopeRow, Participant

MAX_SCANNED = 10_000
"""At most this many waiting envelopes are read for one view (a mailbox's bound anyway)."""


def _key(observer: str) -> str:
    return "observe:" + hashlib.sha256(observer.encode("utf-8")).hexdigest()[:40]


async def grant(exercises: Exercises, exercise: str, observer: str, party: str) -> dict[str, str]:
    """Let `observer` (an observer of `exercise`) see what control sees of `party`'s traffic."""
    scenario = await exercises.scenario(exercise)
    who, seen = scenario.role(observer), scenario.role(party)
    if who is None or who.kind != "observer":
        raise BadRequest(f"{observer} is not an observer of the exercise {exercise}",
                         code="not_observer")  # fmt: skip
    if seen is None or seen.kind == "observer":
        raise BadRequest(f"{party} is not a party or mediator of the exercise {exercise}",
                         code="invalid_field")  # fmt: skip
    grant = {"observer": observer, "exercise": exercise, "party": party}
    await exercises.store.set_meta(_key(observer), json.dumps(grant).encode())
    return grant


async def revoke(exercises: Exercises, exercise: str, observer: str) -> bool:
    """End `observer`'s view; -> whether there was one."""
    found = await _grant(exercises, observer)
    if found is None or found["exercise"] != exercise:
        return False
    await exercises.store.set_meta(_key(observer), b"")
    return True


async def _grant(exercises: Exercises, observer: str) -> dict[str, str] | None:
    raw = await exercises.store.get_meta(_key(observer))
    if not raw:
        return None
    loaded: dict[str, str] = json.loads(raw)
    return loaded if loaded.get("observer") == observer else None


async def view(exercises: Exercises, observer: str) -> dict[str, Any]:
    """What `observer` may see of its party's traffic, class by class (403 without a grant)."""
    exercise = (await exercises.role_map()).get(observer)
    if exercise is None:
        raise NotFound(f"{observer} has no role in an exercise on this relay", code="no_exercise")
    scenario = await exercises.scenario(exercise)
    role = scenario.role(observer)
    found = await _grant(exercises, observer)
    if role is None or role.kind != "observer" or found is None or found["exercise"] != exercise:
        raise Forbidden("exercise control has given you no view of a party "
                        "(backchannel-relay exercise observe)", code="no_view")  # fmt: skip
    party = found["party"]
    letters: list[dict[str, Any]] = []
    counted = 0
    async with exercises.store.read() as session:
        party_id = await session.scalar(select(Participant.id).where(Participant.name == party))
        rows: list[tuple[int, bytes]] = []
        if party_id is not None:
            rows = [(at, body) for at, body in (await session.execute(
                select(EnvelopeRow.received_at, EnvelopeRow.body)
                .where(or_(EnvelopeRow.recipient_id == party_id,
                           EnvelopeRow.sender_id == party_id))
                .order_by(EnvelopeRow.seq).limit(MAX_SCANNED)
            )).all()]  # fmt: skip
    for received_at, body in rows:
        try:
            envelope = Envelope.from_bytes(body)
        except BackchannelError:
            continue
        if envelope.sender is None or party not in (envelope.sender, envelope.recipient):
            continue  # sealed sender: the relay cannot say who wrote it
        other = envelope.recipient if envelope.sender == party else envelope.sender
        if scenario.role(other) is None or other == party:
            continue
        sees = scenario.control_sees(party, other).get("record", "nothing")
        if sees == "envelope":
            letters.append({"from": envelope.sender, "to": envelope.recipient,
                            "at": received_at, "class": "record"})  # fmt: skip
        elif sees == "existence":
            counted += 1
    return {
        "exercise": exercise,
        "party": party,
        "control_sees": (scenario.visibility or Visibility({}, {})).to_json(),
        "record": {
            "letters": letters,
            "count": len(letters) + counted,
            "waiting_only": True,
        },
        "confidential": {"available": False},
        "off_the_record": {"available": False},
        "content": {"available": False},
    }
