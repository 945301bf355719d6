"""How receipts move our letters' status, and what showing a message owes (backchannel/receipts.py):
receipts in any order end the same, a status never goes down, receipts about anything but a
letter we sent to their sender change nothing."""

from __future__ import annotations

from functools import reduce
from itertools import pairwise
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.content import MAX_RECEIPT_IDS, ReceiptType
from backchannel.receipts import (
    ACKNOWLEDGED,
    DELIVERED,
    OPENED_KIND,
    PENDING,
    PROGRESS,
    READ,
    SENT,
    Owed,
    Showing,
    Stored,
    on_receipt,
    on_showing,
    raised,
    rank,
    seal_plan,
)

PEER = "khrushchev"
OUTSIDE = ("failed", "refused")
"""Outgoing statuses outside the progression: the outbox gave up, or the relay refused."""
STATUSES = st.sampled_from(PROGRESS + OUTSIDE)
KINDS = st.sampled_from(list(ReceiptType))


def mine(status: str, kind: str = "letter", peer: str = PEER) -> Stored:
    return Stored("out", kind, peer, status)


def after(status: str, kinds: list[ReceiptType], sender: str = PEER) -> str:
    """The status of a letter to PEER once `sender`'s receipts of `kinds` came, in that order."""
    return reduce(lambda now, kind: on_receipt(mine(now), sender, kind), kinds, status)


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (SENT, ReceiptType.DELIVERED, DELIVERED),
        (SENT, ReceiptType.READ, READ),
        (DELIVERED, ReceiptType.READ, READ),
        (READ, ReceiptType.DELIVERED, READ),  # the delivery receipt came late
        (ACKNOWLEDGED, ReceiptType.READ, ACKNOWLEDGED),
        (PENDING, ReceiptType.DELIVERED, DELIVERED),  # the relay's answer was lost
        ("failed", ReceiptType.DELIVERED, DELIVERED),  # it went before the outbox gave up
    ],
)
def test_a_receipt_raises_our_letter(status: str, kind: ReceiptType, expected: str) -> None:
    assert on_receipt(mine(status), PEER, kind) == expected


@pytest.mark.parametrize(
    "message",
    [
        mine(SENT, peer="castro"),  # a letter to someone else
        Stored("in", "letter", PEER, DELIVERED),  # their letter to us
        mine(SENT, kind="proposal"),  # receipts name letters only
        mine(SENT, kind="forwarded"),
    ],
)
@pytest.mark.parametrize("kind", list(ReceiptType))
def test_a_receipt_about_anything_else_changes_nothing(message: Stored, kind: ReceiptType) -> None:
    assert on_receipt(message, PEER, kind) == message.status


@given(STATUSES, st.lists(KINDS, max_size=8), st.randoms(use_true_random=False))
def test_any_order_of_receipts_ends_the_same(
    status: str, kinds: list[ReceiptType], random: Random
) -> None:
    shuffled = list(kinds)
    random.shuffle(shuffled)
    assert after(status, shuffled) == after(status, kinds)
    assert after(status, kinds + kinds) == after(status, kinds)  # redelivered: no change


@given(STATUSES, st.lists(KINDS, max_size=8))
def test_a_status_never_goes_down(status: str, kinds: list[ReceiptType]) -> None:
    for kind in kinds:
        new = on_receipt(mine(status), PEER, kind)
        assert rank(new) >= rank(status)
        assert new in (status, DELIVERED, READ)
        status = new


@given(STATUSES, st.lists(KINDS, max_size=8), st.sampled_from(["castro", "u-thant"]))
def test_only_the_recipient_moves_a_letter(
    status: str, kinds: list[ReceiptType], sender: str
) -> None:
    assert after(status, kinds, sender) == status


@given(STATUSES, STATUSES, STATUSES)
def test_raised_is_the_highest(a: str, b: str, c: str) -> None:
    assert raised(a, b) in (a, b)
    assert rank(raised(a, b)) == max(rank(a), rank(b))
    assert raised(raised(a, b), c) == raised(a, raised(b, c))


def test_showing_a_letter_owes_its_read_receipt_once() -> None:
    letter = Stored("in", "letter", PEER, DELIVERED)
    first = on_showing(letter)
    assert first == Showing(READ, Owed.READ_RECEIPT)
    assert on_showing(Stored("in", "letter", PEER, first.status)) == Showing(READ)


def test_showing_a_proposal_owes_its_opened_statement() -> None:
    assert on_showing(Stored("in", "proposal", PEER, DELIVERED)) == Showing(DELIVERED, Owed.OPENED)


@pytest.mark.parametrize(
    "message",
    [
        Stored("out", "letter", PEER, SENT),  # our own
        Stored("out", "proposal", PEER, SENT),
        Stored("in", "unreadable", PEER, "failed"),  # no receipt for what could not be read
        Stored("in", "introduction", "u-thant", DELIVERED),
        Stored("in", "letter", PEER, ACKNOWLEDGED),  # acknowledged before it was shown here
    ],
)
def test_showing_anything_else_owes_nothing(message: Stored) -> None:
    assert on_showing(message) == Showing(message.status)


@given(st.sampled_from(["in", "out"]), st.sampled_from(["letter", "proposal", "other"]), STATUSES)
def test_showing_never_lowers_a_status(direction: str, kind: str, status: str) -> None:
    shown = on_showing(Stored(direction, kind, PEER, status))
    assert rank(shown.status) >= rank(status)
    again = on_showing(Stored(direction, kind, PEER, shown.status))
    assert again.status == shown.status


# --- what goes out: `seal_plan` -------------------------------------------------------------

OWED = st.lists(
    st.tuples(
        st.sampled_from([PEER, "kennedy", "u-thant"]),
        st.sampled_from([OPENED_KIND, *map(int, ReceiptType)]),
        st.text("0123456789abcdef", min_size=1, max_size=3),
    ),
    max_size=60,
)


@given(OWED, st.integers(min_value=1, max_value=7))
def test_a_seal_plan_pays_every_debt_once_within_the_limit(
    owed: list[tuple[str, int, str]], limit: int
) -> None:
    plan = seal_plan(owed, limit)
    paid = [(peer, kind, message_id) for peer, kind, ids in plan for message_id in ids]
    assert sorted(paid) == sorted(set(owed))  # every debt, once
    assert all(0 < len(ids) <= limit for _, _, ids in plan)
    groups = [(peer, kind) for peer, kind, _ in plan]
    assert groups == sorted(groups)  # one run of receipts per peer and kind
    for (peer, kind, ids), (after_peer, after_kind, _) in pairwise(plan):
        if (peer, kind) == (after_peer, after_kind):
            assert len(ids) == limit  # split only where one receipt may name no more
    assert seal_plan(Random(len(owed)).sample(owed, len(owed)), limit) == plan  # any order


def test_a_seal_plan_splits_at_what_a_receipt_may_name() -> None:
    owed = [(PEER, int(ReceiptType.READ), f"{i:04x}") for i in range(MAX_RECEIPT_IDS + 1)]
    owed += [(PEER, OPENED_KIND, "ab"), ("kennedy", int(ReceiptType.DELIVERED), "cd")]
    plan = seal_plan(owed)
    assert [(peer, kind, len(ids)) for peer, kind, ids in plan] == [
        ("kennedy", int(ReceiptType.DELIVERED), 1),
        (PEER, OPENED_KIND, 1),
        (PEER, int(ReceiptType.READ), MAX_RECEIPT_IDS),
        (PEER, int(ReceiptType.READ), 1),
    ]
    assert seal_plan([]) == []
