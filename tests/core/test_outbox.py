"""Which queued envelopes go, in which requests, and what a refusal means (backchannel/outbox.py).

Properties: every envelope is in exactly one request, in the order queued, within the limits (one
too large for a request goes alone); a permanent refusal marks exactly one envelope, a transient
one none and ends the pass; whatever the relay answers, a pass ends with every envelope sent,
refused or kept, exactly once, and hands them out in the order queued."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.outbox import (
    SEND_BATCH,
    SEND_BYTES,
    TRANSIENT_STATUSES,
    Item,
    Next,
    Pass,
    on_refusal,
    permanent,
    plan,
)

PENDING = st.lists(st.binary(max_size=40), max_size=40).map(
    lambda envelopes: [(f"{index:04x}", envelope) for index, envelope in enumerate(envelopes)]
)
COUNTS = st.integers(min_value=1, max_value=8)
SIZES = st.integers(min_value=1, max_value=120)
STATUSES = st.one_of(st.none(), st.sampled_from([400, 401, 403, 404, 408, 413, 425, 429, 500, 503]))
PERMANENT = st.sampled_from([400, 403, 404, 409, 413, 422])
TRANSIENT = st.one_of(st.none(), st.sampled_from(sorted(TRANSIENT_STATUSES)), st.sampled_from(
    [500, 502, 503]))  # fmt: skip


def ids(items: list[Item] | tuple[Item, ...]) -> list[str]:
    return [message_id for message_id, _ in items]


@given(PENDING, COUNTS, SIZES)
def test_every_envelope_in_exactly_one_request_in_order_within_limits(
    pending: list[Item], count: int, size: int
) -> None:
    batches = plan(pending, count, size)
    assert [item for batch in batches for item in batch] == pending
    for batch in batches:
        assert 0 < len(batch) <= count
        assert sum(len(e) for _, e in batch) <= size or len(batch) == 1


@given(PENDING, COUNTS, SIZES)
def test_requests_are_as_full_as_the_limits_let(pending: list[Item], count: int, size: int) -> None:
    """A request is only cut where the next envelope would not fit: no needless round trip."""
    batches = plan(pending, count, size)
    for batch, following in pairwise(batches):
        first = len(following[0][1])
        assert len(batch) == count or sum(len(e) for _, e in batch) + first > size


def test_the_defaults_stay_inside_the_relays_limits() -> None:
    assert [len(b) for b in plan([(str(i), b"x") for i in range(250)])] == [100, 100, 50]
    big = b"x" * (SEND_BYTES // 2 + 1)
    assert [len(b) for b in plan([("a", big), ("b", big), ("c", b"")])] == [1, 2]
    assert SEND_BATCH <= 256 and SEND_BYTES < 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("status", "final"),
    [(400, True), (403, True), (404, True), (413, True), (401, False), (408, False),
     (425, False), (429, False), (500, False), (503, False), (None, False), (302, False)],
)  # fmt: skip
def test_which_refusals_are_final(status: int | None, final: bool) -> None:
    assert permanent(status) is final


@given(PENDING.filter(bool), PERMANENT)
def test_a_permanent_refusal_marks_exactly_one_envelope(pending: list[Item], status: int) -> None:
    batch = tuple(pending)
    step = on_refusal(batch, status)
    assert not step.stop
    if len(batch) == 1:
        assert step == Next(refused=batch[0][0])
    else:  # which one? each again on its own, in the same order
        assert step.refused is None
        assert [list(b) for b in step.retry] == [[item] for item in batch]
        assert all(on_refusal(b, status).refused == b[0][0] for b in step.retry)


@given(PENDING.filter(bool), TRANSIENT)
def test_a_transient_refusal_marks_none_and_stops(pending: list[Item], status: int | None) -> None:
    assert on_refusal(tuple(pending), status) == Next(stop=True)


@given(PENDING, COUNTS, SIZES, st.lists(STATUSES | st.just(200), max_size=60))
def test_a_pass_ends_with_every_envelope_sent_refused_or_kept_once(
    pending: list[Item], count: int, size: int, answers: list[int | None]
) -> None:
    """The relay answers each request in turn (200: taken, else refused with that status)."""
    outgoing = Pass.of(pending, count, size)
    handed: list[str] = []
    answered = iter(answers)
    while (batch := outgoing.next()) is not None:
        handed.extend(ids(batch))
        status = next(answered, 200)
        if status == 200:
            outgoing.taken(batch)
            continue
        step = outgoing.refusal(batch, status)
        assert (step.refused is not None) == (permanent(status) and len(batch) == 1)
        if not permanent(status):
            assert outgoing.stopped and outgoing.next() is None
            assert outgoing.kept[: len(batch)] == ids(batch)  # kept, in order, for next time
    every = outgoing.sent + outgoing.refused + outgoing.kept
    assert sorted(every) == sorted(ids(pending))
    assert len(set(every)) == len(every)
    assert outgoing.kept == ids(pending)[len(ids(pending)) - len(outgoing.kept) :]
    first_seen = list(dict.fromkeys(handed))
    assert first_seen == ids(pending)[: len(first_seen)]  # handed out in the order queued


def test_a_refused_request_is_retried_one_by_one_before_the_rest() -> None:
    pending = [(name, b"e") for name in "abcde"]
    outgoing = Pass.of(pending, count=3)
    first = outgoing.next()
    assert first is not None and ids(first) == ["a", "b", "c"]
    outgoing.refusal(first, 403)
    order = []
    while (batch := outgoing.next()) is not None:
        order.append(ids(batch))
        if ids(batch) == ["b"]:
            outgoing.refusal(batch, 403)
        else:
            outgoing.taken(batch)
    assert order == [["a"], ["b"], ["c"], ["d", "e"]]
    assert (outgoing.sent, outgoing.refused, outgoing.kept) == (["a", "c", "d", "e"], ["b"], [])


def test_the_relay_unreachable_keeps_the_rest() -> None:
    outgoing = Pass.of([(name, b"e") for name in "abc"], count=1)
    a = outgoing.next()
    assert a is not None
    outgoing.taken(a)
    b = outgoing.next()
    assert b is not None
    assert outgoing.refusal(b, None).stop
    assert outgoing.next() is None
    assert (outgoing.sent, outgoing.refused, outgoing.kept) == (["a"], [], ["b", "c"])
