"""A model-based test of two parties over a lossy, reordering, duplicating network.

Alice opens with `start_session`; Bob opens with `accept_session` on the first PREKEY message that
reaches him. Hypothesis then interleaves sends, deliveries of any in-flight message in any order,
drops, and redeliveries of messages already delivered. The model tracks which sending chain (DH
epoch) each message belongs to, because a receiver remembers only its current receiving chain and
the `MAX_RECEIVING_CHAINS` before it: a message from an older chain is refused by design.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from backchannel import ratchet
from backchannel.errors import DecryptionError, DuplicateMessageError, PrekeyReusedError
from backchannel.session import (
    MessageType,
    Session,
    accept_session,
    opens_new_session,
    parse_message,
    session_decrypt,
    session_encrypt,
    start_session,
)

from ._support import make_party

ALICE = make_party("alice", one_time=1, kem=1)
BOB = make_party("bob")


@dataclass(frozen=True)
class Sent:
    sender: str
    wire: bytes
    plaintext: bytes
    epoch: int
    """The sender's sending chain: it advances each time the sender takes a DH step."""


@dataclass
class Side:
    session: Session | None
    send_epoch: int
    recv_epoch: int

    def observe(self, epoch: int) -> None:
        """A message from a newer chain of the peer makes this side take a DH step."""
        if epoch > self.recv_epoch:
            assert epoch == self.recv_epoch + 1, "the peer cannot skip a whole chain"
            self.recv_epoch = epoch
            self.send_epoch += 1


class TwoParties(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        alice_session = start_session(ALICE.identity, "alice", BOB.bundle(), "bob")
        self.sides = {
            "alice": Side(alice_session, send_epoch=1, recv_epoch=0),
            "bob": Side(None, send_epoch=0, recv_epoch=0),
        }
        self.bob_prekeys = BOB.prekeys
        self.in_flight: list[Sent] = []
        self.delivered: list[Sent] = []
        self.sent_count = 0

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _peer(name: str) -> str:
        return "bob" if name == "alice" else "alice"

    def _decrypt(self, receiver: str, wire: bytes) -> bytes:
        """Route as an application would; returns the plaintext and keeps the new state."""
        side = self.sides[receiver]
        if receiver == "bob" and opens_new_session(side.session, wire):
            self.bob_prekeys, session, plaintext = accept_session(
                BOB.identity, "bob", self.bob_prekeys, wire
            )
        else:
            assert side.session is not None
            session, plaintext = session_decrypt(side.session, wire)
        side.session = session
        return plaintext

    def _too_old(self, receiver: str, message: Sent) -> bool:
        return message.epoch < self.sides[receiver].recv_epoch - ratchet.MAX_RECEIVING_CHAINS

    # --- rules --------------------------------------------------------------------------------

    def _send(self, name: str, text: bytes) -> None:
        side = self.sides[name]
        assert side.session is not None
        plaintext = b"%d:" % self.sent_count + text
        self.sent_count += 1
        side.session, wire = session_encrypt(side.session, plaintext)
        self.in_flight.append(Sent(name, wire, plaintext, side.send_epoch))

    @rule(text=st.binary(max_size=40))
    def alice_sends(self, text: bytes) -> None:
        self._send("alice", text)

    @precondition(lambda self: self.sides["bob"].session is not None)
    @rule(text=st.binary(max_size=40))
    def bob_sends(self, text: bytes) -> None:
        self._send("bob", text)

    @precondition(lambda self: self.in_flight)
    @rule(index=st.integers(min_value=0))
    def deliver(self, index: int) -> None:
        message = self.in_flight.pop(index % len(self.in_flight))
        receiver = self._peer(message.sender)
        if self._too_old(receiver, message):
            unchanged = self.sides[receiver].session
            with pytest.raises(DecryptionError):
                self._decrypt(receiver, message.wire)
            assert self.sides[receiver].session is unchanged
            return
        previous = self.sides[receiver].session
        before = previous.to_bytes() if previous is not None else b""
        assert self._decrypt(receiver, message.wire) == message.plaintext
        if previous is not None:  # a transition never alters the state it started from
            assert previous.to_bytes() == before
        self.sides[receiver].observe(message.epoch)
        self.delivered.append(message)

    @precondition(lambda self: self.in_flight)
    @rule(index=st.integers(min_value=0))
    def drop(self, index: int) -> None:
        self.in_flight.pop(index % len(self.in_flight))

    @precondition(lambda self: self.delivered)
    @rule(index=st.integers(min_value=0))
    def redeliver(self, index: int) -> None:
        message = self.delivered[index % len(self.delivered)]
        receiver = self._peer(message.sender)
        session = self.sides[receiver].session
        assert session is not None
        before = session.to_bytes()
        expected = DecryptionError if self._too_old(receiver, message) else DuplicateMessageError
        with pytest.raises(expected):
            self._decrypt(receiver, message.wire)
        assert self.sides[receiver].session is session
        assert session.to_bytes() == before

    def _delivered_prekey_messages(self) -> list[Sent]:
        return [
            m
            for m in self.delivered
            if m.sender == "alice" and parse_message(m.wire).type == MessageType.PREKEY
        ]

    @precondition(lambda self: self._delivered_prekey_messages())
    @rule()
    def replayed_prekey_message_cannot_open_a_second_session(self) -> None:
        """Fed straight to `accept_session`, a delivered PREKEY message finds its one-time
        prekeys consumed, and the prekeys are left as they were."""
        message = self._delivered_prekey_messages()[0]
        before = self.bob_prekeys.to_bytes()
        with pytest.raises(PrekeyReusedError):
            accept_session(BOB.identity, "bob", self.bob_prekeys, message.wire)
        assert self.bob_prekeys.to_bytes() == before

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def alice_attaches_the_header_until_bob_has_answered(self) -> None:
        alice = self.sides["alice"].session
        assert alice is not None
        heard_from_bob = any(m.sender == "bob" for m in self.delivered)
        assert (alice.pending_header is None) == heard_from_bob

    @invariant()
    def bob_has_a_session_once_anything_reached_him(self) -> None:
        reached_bob = any(m.sender == "alice" for m in self.delivered)
        assert (self.sides["bob"].session is not None) == reached_bob


class TwoPartiesWithShortChainMemory(TwoParties):
    """The same, remembering a single earlier receiving chain, so that late messages from
    forgotten chains (refused with `DecryptionError`) actually occur within a short run."""

    def __init__(self) -> None:
        self._saved_max_chains = ratchet.MAX_RECEIVING_CHAINS
        ratchet.MAX_RECEIVING_CHAINS = 1
        super().__init__()

    def teardown(self) -> None:
        ratchet.MAX_RECEIVING_CHAINS = self._saved_max_chains


def _settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


TwoParties.TestCase.settings = _settings(60)
TwoPartiesWithShortChainMemory.TestCase.settings = _settings(30)
test_two_parties = TwoParties.TestCase
test_two_parties_with_short_chain_memory = TwoPartiesWithShortChainMemory.TestCase
