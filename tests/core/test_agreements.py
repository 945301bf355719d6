"""Bound, void, understood: the agreement decision (backchannel/agreements.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.agreements import (
    Agreement,
    Clause,
    Condition,
    Outcome,
    decide,
    first_decided,
)
from backchannel.proposals import Reveal


def d(n: int) -> bytes:
    return bytes([n]) * 32


def test_accepted_without_conditions_is_bound() -> None:
    assert decide([Clause(d(1), Outcome.ACCEPTED)])[d(1)].agreement == Agreement.BOUND


def test_not_accepted_is_no_agreement() -> None:
    result = decide([Clause(d(1), Outcome.OPEN), Clause(d(2), Outcome.FAILED)])
    assert {r.agreement for r in result.values()} == {Agreement.NONE}


def test_failed_condition_voids_and_open_one_leaves_pending() -> None:
    result = decide(
        [
            Clause(d(1), Outcome.ACCEPTED, (Condition(d(2)),)),
            Clause(d(2), Outcome.FAILED),
            Clause(d(3), Outcome.ACCEPTED, (Condition(d(4)),)),
            Clause(d(4), Outcome.OPEN),
            Clause(d(5), Outcome.ACCEPTED, (Condition(d(9)),)),
        ]
    )
    assert result[d(1)].agreement == Agreement.VOID
    assert "failed" in result[d(1)].reason
    assert result[d(3)].agreement == Agreement.PENDING
    assert result[d(5)].agreement == Agreement.PENDING


def test_off_record_is_understood_and_counts_only_where_allowed() -> None:
    jupiter = Clause(d(9), Outcome.ACCEPTED, off_record=True)
    result = decide(
        [
            jupiter,
            Clause(d(1), Outcome.ACCEPTED, (Condition(d(9), allow_understood=True),)),
            Clause(d(2), Outcome.ACCEPTED, (Condition(d(9)),)),
        ]
    )
    assert result[d(9)].agreement == Agreement.UNDERSTOOD
    assert result[d(1)].agreement == Agreement.BOUND
    assert result[d(2)].agreement == Agreement.VOID
    assert "only understood" in result[d(2)].reason


def test_off_record_clause_is_never_bound() -> None:
    result = decide([Clause(d(1), Outcome.ACCEPTED, off_record=True)])
    assert result[d(1)].agreement == Agreement.UNDERSTOOD


def test_void_propagates_along_a_chain() -> None:
    result = decide(
        [
            Clause(d(1), Outcome.ACCEPTED, (Condition(d(2)),)),
            Clause(d(2), Outcome.ACCEPTED, (Condition(d(3)),)),
            Clause(d(3), Outcome.FAILED),
        ]
    )
    assert result[d(1)].agreement == result[d(2)].agreement == Agreement.VOID


outcomes = st.sampled_from(list(Outcome))


@given(st.lists(outcomes, min_size=1, max_size=8), st.data())
def test_a_package_binds_all_or_none(members: list[Outcome], data: st.DataObject) -> None:
    """Proposals each conditional on all the others: all bound, or none is."""
    digests = [d(i + 1) for i in range(len(members))]
    clauses = [
        Clause(digest, outcome, tuple(Condition(o) for o in digests if o != digest))
        for digest, outcome in zip(digests, members, strict=True)
    ]
    order = data.draw(st.permutations(clauses))
    result = decide(order)
    bound = [result[x].agreement == Agreement.BOUND for x in digests]
    assert all(bound) or not any(bound)
    assert all(bound) == all(o == Outcome.ACCEPTED for o in members)
    if Outcome.FAILED in members:
        accepted = [x for x, o in zip(digests, members, strict=True) if o == Outcome.ACCEPTED]
        assert all(result[x].agreement == Agreement.VOID for x in accepted)


@given(
    st.lists(
        st.tuples(
            outcomes,
            st.lists(st.tuples(st.integers(1, 6), st.booleans()), max_size=4),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    st.randoms(use_true_random=False),
)
def test_the_decision_does_not_depend_on_the_order_given(
    spec: list[tuple[Outcome, list[tuple[int, bool]], bool]], rnd: object
) -> None:
    clauses = [
        Clause(d(i + 1), outcome, tuple(Condition(d(c), allow) for c, allow in conds), off)
        for i, (outcome, conds, off) in enumerate(spec)
    ]
    shuffled = list(clauses)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    first, second = decide(clauses), decide(shuffled)
    assert {k: v.agreement for k, v in first.items()} == {k: v.agreement for k, v in second.items()}
    for clause in clauses:
        state = first[clause.digest].agreement
        if clause.off_record:
            assert state != Agreement.BOUND
        if clause.outcome != Outcome.ACCEPTED:
            assert state == Agreement.NONE
        if state == Agreement.BOUND:
            for condition in clause.conditions:
                other = first.get(condition.digest)
                if other is None:
                    assert condition.allow_understood
                    continue
                assert other.agreement == Agreement.BOUND or (
                    other.agreement == Agreement.UNDERSTOOD and condition.allow_understood
                )


@given(st.integers(1, 10_000), st.integers(1, 10_000))
def test_the_first_sequenced_of_acceptance_and_withdrawal_decides(
    accept: int, withdraw: int
) -> None:
    if accept == withdraw:
        return
    events = [(accept, Outcome.ACCEPTED), (withdraw, Outcome.FAILED), (0, Outcome.OPEN)]
    winner = first_decided(events)
    assert winner == (Outcome.ACCEPTED if accept < withdraw else Outcome.FAILED)
    # The race decides the package: a condition withdrawn first voids the accepted proposal.
    result = decide(
        [
            Clause(d(1), Outcome.ACCEPTED, (Condition(d(2)),)),
            Clause(d(2), winner, (Condition(d(1)),)),
        ]
    )
    expected = Agreement.BOUND if accept < withdraw else Agreement.VOID
    assert result[d(1)].agreement == expected


def test_an_allowed_understood_clause_not_in_the_record_counts_but_is_not_provable() -> None:
    result = decide([Clause(d(1), Outcome.ACCEPTED, (Condition(d(9), allow_understood=True),))])
    assert result[d(1)].agreement == Agreement.BOUND
    assert "no record can prove" in result[d(1)].reason


def test_an_off_record_clause_round_trips_and_text_is_not_a_clause() -> None:
    from backchannel.agreements import ClauseForm, OffRecordClause
    from backchannel.errors import BackchannelError

    from .test_proposals import offer

    proposal = offer(conditions=(), reveal=Reveal.IMMEDIATE, reveal_at_ms=0)
    made = OffRecordClause(ClauseForm.PROPOSE, proposal)
    assert OffRecordClause.from_plaintext(made.to_plaintext()) == made
    accepted = OffRecordClause(ClauseForm.ACCEPT, digest=proposal.digest())
    assert OffRecordClause.from_plaintext(accepted.to_plaintext()) == accepted
    assert OffRecordClause.from_plaintext(b"Jupiters, in words.") is None
    assert OffRecordClause.from_plaintext(b"") is None
    for bad in (b"\x00\x09", b"\x00\x02" + bytes(31), accepted.to_plaintext() + b"\x00"):
        with pytest.raises(BackchannelError):  # unknown form, truncated, trailing bytes
            OffRecordClause.from_plaintext(bad)
    timed = OffRecordClause(
        ClauseForm.PROPOSE, offer(conditions=(), reveal=Reveal.AT_TIME, reveal_at_ms=5)
    )
    with pytest.raises(ValueError, match="revealed at once"):
        timed.to_plaintext()
