"""What the feature modules need of the participant, as a protocol they are typed against.

`service.Participant` holds one of each feature (negotiation, mediation, off the record, the
exercise) and hands itself to them; were they typed against `Participant` itself, each would
import the service that imports it, a circle that type checkers and import-graph checks see
(tests/core/test_import_graph.py forbids it). So they name only this: the profile, its store
and relay connection, and the few operations they share. A feature that also needs another
feature extends the protocol in its own module (`offrecord.Participant` adds `exercise`), and
mypy checks that `Participant` satisfies each where it passes itself to the feature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from backchannel.content import Letter
    from backchannel.identity import IdentityPublic

    from .localstore import Contact, LocalStore, Message
    from .profile import Unlocked
    from .relay import RelayClient
    from .shown import Shown


@dataclass(frozen=True, slots=True)
class Flushed:
    """What one pass over the outbox did."""

    sent: frozenset[str]
    refused: dict[str, str]
    """Message id -> the relay's reason: refused for good, marked `refused`, not retried."""
    waiting: str | None
    """Why the rest stays queued (the relay unreachable, busy or failing), if it does."""


class ParticipantApi(Protocol):
    """One unlocked profile as the feature modules use it (implemented by `service.Participant`)."""

    me: Unlocked
    name: str
    store: LocalStore
    relay: RelayClient
    notes: list[str]
    """What catching up met, to tell the user once."""

    async def _call(self, awaitable: Any) -> Any:
        """Await a relay call that needs no login, its failures as `CliError`s."""
        ...

    async def authed(self, awaitable_factory: Callable[[], Any]) -> Any:
        """Run a relay call, logging in again once if the token was refused."""
        ...

    async def contact(self, name: str) -> Contact:
        """The contact `name`, pinned from the relay's directory on first use."""
        ...

    def _pin(self, db: Any, name: str, role: str, identity: bytes) -> Contact: ...

    def _letter(self, message: Message, peer: str, peer_keys: bytes) -> Letter:
        """A stored letter's signed encoding, rebuilt."""
        ...

    async def queue(
        self,
        to: str,
        peer: IdentityPublic,
        content: bytes,
        message_id: bytes,
        text: str,
        *,
        kind: str,
        sent_at: int,
        in_reply_to: str | None = None,
        also: Callable[[Any], None] | None = None,
        subject: str | None = None,
        digest: str | None = None,
        report: bytes | None = None,
    ) -> str:
        """Encrypt `content` to `to` and store it in the outbox; -> its message id."""
        ...

    async def flush_outbox(self, mine: Sequence[str] = (), what: str = "the message") -> Flushed:
        ...

    async def send_letter(self, to: str, text: str, in_reply_to: str | None = None) -> Shown: ...

    async def send_unrecorded(self, to: str, content: bytes) -> None:
        """Send `content` in the session with `to`, keeping nothing but the ratchet state."""
        ...

    async def sync(self) -> object:
        """Send the outbox, fetch and store what waits on the relay, send receipts."""
        ...

    def take_unshown(self, db: Any) -> list[Shown]:
        """The received messages not yet shown, marked shown in `db`'s transaction."""
        ...
