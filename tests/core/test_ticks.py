"""What a clock tick finds due (backchannel/ticks.py): timed proposals to open, delivered
statements owed, exchanges to release, envelopes expired before the relay took them, processed
ids to forget, off-the-record channels expired. Properties: a later tick never un-does what an
earlier one made due; the same holdings at the same time (in any order) give the same answer;
once applied, nothing is due again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from random import Random
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel import ticks
from backchannel.otr import OtrChannel, Role
from backchannel.proposals import FINAL, Status
from backchannel.ticks import Exchange, Locked, Received

T = TypeVar("T")
TIMES = st.integers(min_value=0, max_value=10**13)
DIGESTS = st.text("0123456789abcdef", min_size=4, max_size=8)
LOCKED = st.lists(st.builds(Locked, DIGESTS, TIMES), max_size=12, unique_by=lambda p: p.digest)
RECEIVED = st.lists(
    st.builds(Received, DIGESTS, st.booleans(), st.sampled_from(list(Status))),
    max_size=12,
    unique_by=lambda r: r.digest,
)
SIDES = ("kennedy", "khrushchev")
EXCHANGES = st.lists(
    st.builds(
        Exchange,
        DIGESTS,
        st.just(SIDES),
        st.frozensets(st.sampled_from(SIDES)),
        st.booleans(),
    ),
    max_size=8,
    unique_by=lambda e: e.id,
)


def later(now: int, gap: int) -> int:
    return now + gap


# --- timed proposals ----------------------------------------------------------------------------


def test_a_timed_proposal_opens_from_its_reveal_time_on_earliest_first() -> None:
    held = [Locked("b", 2_000), Locked("a", 3_000), Locked("c", 2_000)]
    assert ticks.reveals_due(held, 1_999) == ()
    assert ticks.reveals_due(held, 2_000) == ("b", "c")
    assert ticks.reveals_due(held, 5_000) == ("b", "c", "a")
    assert ticks.next_reveal(held) == 2_000
    assert ticks.next_reveal([]) is None


@given(LOCKED, TIMES, st.integers(min_value=0, max_value=10**9))
def test_a_later_tick_never_unreveals(held: list[Locked], now: int, gap: int) -> None:
    assert set(ticks.reveals_due(held, now)) <= set(ticks.reveals_due(held, later(now, gap)))


@given(LOCKED, TIMES, st.integers(min_value=0, max_value=10**9))
def test_an_opened_proposal_is_never_due_again(held: list[Locked], now: int, gap: int) -> None:
    opened = set(ticks.reveals_due(held, now))
    left = [p for p in held if p.digest not in opened]  # `locked` cleared as each opens
    assert not opened & set(ticks.reveals_due(left, later(now, gap)))
    nxt = ticks.next_reveal(left)
    assert nxt is None or nxt > now


# --- delivered statements -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stated", "status", "owed"),
    [
        (False, Status.SEALED, True),
        (False, Status.OPENED, True),
        (True, None, False),  # stated already: not even replayed
        (False, Status.EXPIRED, False),
        (False, Status.ACCEPTED, False),
        (False, Status.WITHDRAWN, False),
        (False, None, False),
    ],
)
def test_a_delivered_statement_is_owed_while_the_proposal_is_answerable(
    stated: bool, status: Status | None, owed: bool
) -> None:
    assert ticks.deliveries_due([Received("d1", stated, status)]) == (("d1",) if owed else ())


@given(RECEIVED)
def test_a_delivered_statement_is_owed_once(received: list[Received]) -> None:
    due = set(ticks.deliveries_due(received))
    assert all(r.status not in FINAL | {Status.EXPIRED} for r in received if r.digest in due)
    made = [replace(r, stated=True) if r.digest in due else r for r in received]
    assert ticks.deliveries_due(made) == ()


# --- exchanges ----------------------------------------------------------------------------------


def test_an_exchange_is_ready_once_both_offers_are_in() -> None:
    one = Exchange("e1", SIDES, frozenset({"kennedy"}), True)
    assert ticks.exchange_status(one) == "waiting for khrushchev"
    both = replace(one, authors=frozenset(SIDES))
    assert ticks.exchange_status(both) == ticks.READY
    assert ticks.exchange_status(replace(both, unreleased=False)) == ticks.RELEASED
    assert ticks.exchange_status(replace(one, sides=("kennedy",))) == "waiting for the other side"
    assert ticks.releases_due([one, both, replace(both, id="e0", unreleased=False)]) == ("e1",)


@given(EXCHANGES)
def test_a_released_exchange_is_never_due_again(exchanges: list[Exchange]) -> None:
    due = set(ticks.releases_due(exchanges))
    done = [replace(e, unreleased=False) if e.id in due else e for e in exchanges]
    assert not due & set(ticks.releases_due(done))
    assert {e.id for e in done if ticks.exchange_status(e) == ticks.RELEASED} >= due


# --- envelopes, processed ids, channels ---------------------------------------------------------


def test_an_envelope_within_the_margin_of_its_expiry_is_not_sent() -> None:
    now = 1_700_000_000
    assert not ticks.undeliverable(now + ticks.ENVELOPE_MARGIN_S + 1, now)
    assert ticks.undeliverable(now + ticks.ENVELOPE_MARGIN_S, now)
    assert ticks.undeliverable(now - 5, now)
    assert ticks.undeliverable(now + 3599, now, margin_s=3600)  # as if an hour had passed


def test_a_processed_id_is_kept_until_its_envelope_expires() -> None:
    assert not ticks.forgettable(100, 100)
    assert ticks.forgettable(99, 100)
    assert ticks.forget_before(100) == 100


@given(TIMES, TIMES)
def test_a_channel_expires_as_the_core_state_says(expires_at: int, now: int) -> None:
    state = OtrChannel(b"\0" * 16, Role.OPENER, b"\1" * 32, 0, b"\2" * 32, 0, expires_at)
    assert ticks.channel_expired(expires_at, now) == state.expired(now)


EXPIRIES = st.lists(TIMES, max_size=12)
DECIDERS: list[Callable[[int, int], bool]] = [
    ticks.undeliverable,
    ticks.forgettable,
    ticks.channel_expired,
]


@pytest.mark.parametrize("decide", DECIDERS)
@given(EXPIRIES, TIMES, st.integers(min_value=0, max_value=10**9))
def test_what_expired_stays_expired(
    decide: Callable[[int, int], bool], expiries: list[int], now: int, gap: int
) -> None:
    """Marked failed, dropped, forgotten or wiped, an expired one is no longer held, so it is
    never due twice; and a later tick finds at least as much expired."""
    first = {i for i, at in enumerate(expiries) if decide(at, now)}
    then = {i for i, at in enumerate(expiries) if decide(at, later(now, gap))}
    assert first <= then


# --- the same holdings, the same answer ---------------------------------------------------------


@given(LOCKED, RECEIVED, EXCHANGES, TIMES, st.integers())
def test_the_same_holdings_in_any_order_give_the_same_answer(
    held: list[Locked],
    received: list[Received],
    exchanges: list[Exchange],
    now: int,
    seed: int,
) -> None:
    rng = Random(seed)

    def mixed(items: list[T]) -> list[T]:
        return rng.sample(items, len(items))

    assert ticks.reveals_due(held, now) == ticks.reveals_due(mixed(held), now)
    assert ticks.next_reveal(held) == ticks.next_reveal(mixed(held))
    assert ticks.deliveries_due(received) == ticks.deliveries_due(mixed(received))
    assert ticks.releases_due(exchanges) == ticks.releases_due(mixed(exchanges))
