"""Which way a message takes in an exercise, from the relay's view (backchannel/channels.py).

Property: for any scenario policy, the participant's answer from the view the relay gives it
(its channels as the relay builds them from `Policy.route`) is the policy's own: direct where
the policy lets it write directly, through the same mediator where it names one, refused where
it gives no channel; anyone outside the exercise, or no exercise at all, is reached directly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backchannel.channels import View, reach
from backchannel.exercise import Policy, Route

NAMES = ("kennedy", "khrushchev", "castro", "u-thant", "observer")


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    kinds = {
        name: draw(st.sampled_from(["party", "mediator", "observer"]))
        for name in draw(st.lists(st.sampled_from(NAMES), min_size=2, unique=True))
    }
    names = sorted(kinds)
    pairs = [frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1 :]]
    direct = frozenset(draw(st.lists(st.sampled_from(pairs), max_size=4)))
    via = {
        pair: draw(st.sampled_from(names))
        for pair in draw(st.lists(st.sampled_from(pairs), max_size=4))
        if pair not in direct
    }
    return Policy(kinds, direct, via)


def view_of(policy: Policy, me: str) -> View:
    """What the relay tells `me` (server/backchannel_relay/exercises.py, `view`)."""
    channels = {
        other: Route(route.direct, route.via)
        for other in policy.kinds
        if other != me and ((route := policy.route(me, other)).direct or route.via)
    }
    return View("cuba-1962", tuple(policy.kinds), channels)


@given(policies(), st.data())
def test_the_view_answers_as_the_policy_does(policy: Policy, data: st.DataObject) -> None:
    me = data.draw(st.sampled_from(sorted(policy.kinds)))
    to = data.draw(st.sampled_from(sorted(set(policy.kinds) - {me})))
    rule, answer = policy.route(me, to), reach(view_of(policy, me), me, to)
    assert answer.direct == rule.direct
    if rule.direct:
        assert answer == Route(True)
    elif rule.via is not None:
        assert answer.via == rule.via
        assert answer.reason == rule.reason
    else:
        refused = f"the exercise cuba-1962 gives {me} no channel to {to}"
        assert answer == Route(False, reason=refused)


@given(policies(), st.data())
def test_anyone_outside_the_exercise_is_reached_directly(
    policy: Policy, data: st.DataObject
) -> None:
    me = data.draw(st.sampled_from(sorted(policy.kinds)))
    assert reach(view_of(policy, me), me, "stranger") == Route(True)
    assert reach(None, me, data.draw(st.sampled_from(NAMES))) == Route(True)


def test_a_channel_through_a_mediator() -> None:
    view = View("cuba-1962", ("kennedy", "khrushchev", "u-thant"), {
        "u-thant": Route(True), "khrushchev": Route(False, "u-thant")})  # fmt: skip
    assert reach(view, "kennedy", "u-thant") == Route(True)
    assert reach(view, "kennedy", "khrushchev").via == "u-thant"
    refused = reach(View("cuba-1962", ("kennedy", "castro"), {}), "kennedy", "castro")
    assert (refused.direct, refused.via) == (False, None)
    assert refused.reason == "the exercise cuba-1962 gives kennedy no channel to castro"
