"""The exercise policy and the registration role hold on every route, on each store (issue 16,
items 5-7 and 10): what the relay itself hands from one participant to another (notary entries,
content keys, prekey bundles) follows the rule for a direct letter; the notary log shows each
participant only its own proposals' entries (every other entry as a link, enough to check the
chain); drops are opened only by roles that may send, at a bounded pace; observers send nothing;
the notary binds the terms it enforces into its signed entry; a session token can be revoked."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from backchannel.drops import drop_address, read_hash
from backchannel.errors import NotaryError
from backchannel.keys import SigningPublicKey
from backchannel.proposals import (
    NotaryLink,
    NotaryReceipt,
    Party,
    Proposal,
    notary_terms,
    seal,
)
from backchannel.records import ProposalRecord
from backchannel_cli.relay import RelayClient, b64

from .conftest import GENEROUS, Backend, Member, Relay, join, make_relay
from .test_api import envelope, refused
from .test_exercises import backend_of_its_own, control, member
from .test_notary import commit, logged, state

DROPS_EACH = 3
"""`--drops-per-participant` of this module's relay."""
KINDS = (
    ("kennedy", "party"),
    ("khrushchev", "party"),
    ("castro", "party"),
    ("thant", "mediator"),
    ("watcher", "observer"),
)
SCENARIO = """
schema = 1
[exercise]
name = "{exercise}"
title = "Policy everywhere"
brief = "Who may reach whom, on every route."
[clock]
start = "1962-10-22T08:00:00-04:00"
{roles}
[policy]
direct = [["{kennedy}", "{khrushchev}"], ["{khrushchev}", "{castro}"]]
[[policy.via]]
between = ["{kennedy}", "{castro}"]
mediator = "{thant}"
"""
ISLAND = """
schema = 1
[exercise]
name = "{exercise}"
title = "Two islands"
brief = "Nobody writes to anybody."
[clock]
start = "1962-10-22T08:00:00-04:00"
{roles}
[policy]
direct = []
"""


def role(name: str, kind: str) -> str:
    return f'[[roles]]\nname = "{name}"\nkind = "{kind}"\ntitle = "{name}"\nbrief = "{name}."\n'


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def policed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Backend, Relay]]:
    """A relay on a store of its own (exercises are loaded into it), default prekey limits."""
    workdir = tmp_path_factory.mktemp(f"policy-{request.param}")
    for backend in backend_of_its_own(request.param, workdir):
        relay = make_relay(backend, *GENEROUS, "--drops-per-participant", str(DROPS_EACH))
        try:
            yield backend, relay
        finally:
            relay.kill(signal.SIGTERM)


class Cast:
    """The participants of one test, closed at its end."""

    def __init__(self) -> None:
        self.members: list[Member] = []

    def add(self, member: Member) -> Member:
        self.members.append(member)
        return member

    async def join(self, relay: Relay, prefix: str, role: str = "party") -> Member:
        return self.add(await join(relay, prefix, one_time=10, role=role))

    async def close(self) -> None:
        for held in self.members:
            await held.client.close()


@pytest.fixture
async def cast() -> AsyncIterator[Cast]:
    held = Cast()
    yield held
    await held.close()


async def exercise(
    policed: tuple[Backend, Relay],
    cast: Cast,
    tmp_path: Path,
    early: dict[str, Member] | None = None,
    template: str = SCENARIO,
    kinds: tuple[tuple[str, str], ...] = KINDS,
) -> dict[str, Member]:
    """Load a scenario with fresh role names (or the names of `early`, registered already and
    bound by the load), register every other role from its invite, and wait until the relay
    applies the policy (its view of the roles may be a second old)."""
    backend, relay = policed
    tag = os.urandom(3).hex()
    early = early or {}
    names = {k: early[k].name if k in early else f"{k}-{tag}" for k, _ in kinds}
    path = tmp_path / f"scenario-{tag}.toml"
    roles = "".join(role(names[k], kind) for k, kind in kinds)
    path.write_text(template.format(exercise=f"policy-{tag}", roles=roles, **names))
    loaded = control(backend, "load", str(path))
    invites = {r["name"]: r["invite"] for r in loaded["roles"]}
    members = dict(early)
    for key, _ in kinds:
        if key not in members:
            joined = await member(relay, names[key], invites[names[key]], one_time=10)
            members[key] = cast.add(joined)
    first = members[kinds[0][0]]
    deadline = time.monotonic() + 10
    while True:
        try:
            await first.client.request("GET", "/v1/exercise")
            return members
        except Exception:
            assert time.monotonic() < deadline, "the relay never saw the exercise"
            await asyncio.sleep(0.1)


async def whole_log(member: Member) -> list[NotaryReceipt | NotaryLink]:
    items: list[NotaryReceipt | NotaryLink] = []
    while True:
        page = await member.client.request(
            "GET", "/v1/notary/log", params={"after": str(len(items)), "limit": "500"}
        )
        items += [logged(item) for item in page["entries"]]
        if not page["more"]:
            return items


async def open_drop(who: Member, expires_in: int = 600) -> dict[str, Any]:
    body = {
        "address": b64(drop_address(os.urandom(32))),
        "read_hash": b64(read_hash(os.urandom(32))),
        "expires_at": int(time.time()) + expires_in,
    }
    answer: dict[str, Any] = await who.client.request("POST", "/v1/drops", body)
    return answer


async def bundle(fetcher: Member, target: Member) -> Any:
    return await fetcher.client.fetch_bundle(target.name)


# --- item 5: no carrier between a forbidden pair --------------------------------------------------


async def test_a_forbidden_pair_passes_nothing_through_a_drop_token_and_the_notary(
    policed: tuple[Backend, Relay], cast: Cast, tmp_path: Path
) -> None:
    """The reproduced bypass: Kennedy (who reaches Castro only through Thant) opened a drop and
    posted its delivery token as a notary commitment addressed to Castro, who read it from the
    log without logging in."""
    m = await exercise(policed, cast, tmp_path)
    kennedy, khrushchev, castro = m["kennedy"], m["khrushchev"], m["castro"]
    token = os.urandom(32)
    # The relay cannot know whom a drop is for: a role with a direct channel opens one.
    await open_drop(kennedy)

    for addressees in ([castro], [khrushchev, castro]):
        forbidden = await refused(commit(kennedy, addressees, token))
        assert (forbidden.status, forbidden.code) == (403, "policy_forbids")
        assert f"{kennedy.name} reaches {castro.name} only through" in forbidden.message

    # Notarised for Khrushchev instead, the token shows in the log to its parties alone.
    await commit(kennedy, [khrushchev], token)
    seen = [i for i in await whole_log(khrushchev) if isinstance(i, NotaryReceipt)]
    assert any(r.entry.subject == token for r in seen)
    for item in await whole_log(castro):
        assert isinstance(item, NotaryLink) or item.entry.subject != token
        assert token not in (item.to_bytes() if isinstance(item, NotaryLink) else b"")
    async with RelayClient(policed[1].url) as anyone:
        nobody = await refused(anyone.request("GET", "/v1/notary/log"))
    assert nobody.status == 401


async def test_statements_and_keys_reach_only_whom_the_policy_lets_through(
    policed: tuple[Backend, Relay], cast: Cast, tmp_path: Path
) -> None:
    """A proposal notarised before the exercise bound its author and addressee (the README's
    order: invites by hand, then the scenario): neither may then pass anything through it."""
    _, relay = policed
    kennedy, castro = await cast.join(relay, "kennedy"), await cast.join(relay, "castro")
    commitment = os.urandom(32)
    await commit(kennedy, [castro], commitment)  # no exercise yet: nothing forbids it
    await exercise(policed, cast, tmp_path, early={"kennedy": kennedy, "castro": castro})
    for who, call in (
        (castro, state(castro, "acceptance", commitment, os.urandom(32))),
        (castro, state(castro, "statement", commitment, os.urandom(32))),
        (kennedy, state(kennedy, "withdrawal", commitment, os.urandom(32))),
        (kennedy, kennedy.client.request("POST", "/v1/notary/keys", {
            "commitment": b64(commitment), "key": b64(os.urandom(32)),
            "release_at_ms": int(time.time() * 1000) + 60_000,
        })),
    ):  # fmt: skip
        forbidden = await refused(call)
        assert (forbidden.status, forbidden.code) == (403, "policy_forbids"), who.name


async def test_a_proposal_through_the_pairs_mediator_reaches_the_other_side_only_through_it(
    policed: tuple[Backend, Relay], cast: Cast, tmp_path: Path
) -> None:
    """A proposal between a pair the exercise routes through a mediator is notarised when it
    names that mediator (`via`, bound into the terms), and so are the addressee's statements
    about it; but neither side reads the other's entries from the log (links only), nor the
    winner of a race in a refusal: what one writes reaches the other through the mediator,
    which reads the entries in full. A content key, which the relay itself hands out, still
    needs a direct channel."""
    m = await exercise(policed, cast, tmp_path)
    kennedy, khrushchev, castro, thant = (m[k] for k in ("kennedy", "khrushchev", "castro",
                                                         "thant"))  # fmt: skip
    token = os.urandom(32)  # what a drop's delivery token would be

    def body(via: str) -> dict[str, Any]:
        return {"commitment": b64(token), "addressees": [castro.name], "via": via}

    for via, status, code in (
        (khrushchev.name, 403, "policy_forbids"),  # not the pair's mediator
        (castro.name, 400, "invalid_field"),  # an addressee is not a mediator
        (kennedy.name, 400, "invalid_field"),
    ):
        wrong = await refused(kennedy.client.request("POST", "/v1/notary/commitments", body(via)))
        assert (wrong.status, wrong.code) == (status, code), via
    assert f"--via {thant.name}" in wrong_advice(
        await refused(commit(kennedy, [castro], token))
    )

    answer = await kennedy.client.request("POST", "/v1/notary/commitments", body(thant.name))
    committed = NotaryReceipt.from_bytes(base64.b64decode(answer["receipt"]))
    assert committed.entry.value == notary_terms(
        token, party(kennedy), [party(castro)], 0, party(thant)
    )
    # Castro accepts (any 32 bytes as the statement's digest): through the mediator too.
    digest = os.urandom(32)
    accepted = await state(castro, "acceptance", token, digest)
    lost = await refused(state(kennedy, "withdrawal", token, os.urandom(32)))
    assert (lost.status, lost.code) == (409, "already_decided")
    assert "winner" not in lost.body  # Castro's digest would reach Kennedy unmediated
    key = await refused(kennedy.client.request("POST", "/v1/notary/keys", {
        "commitment": b64(token), "key": b64(os.urandom(32)),
        "release_at_ms": int(time.time() * 1000) + 60_000,
    }))  # fmt: skip
    assert (key.status, key.code) == (403, "policy_forbids")

    def full(items: list[NotaryReceipt | NotaryLink]) -> dict[int, NotaryReceipt]:
        return {i.entry.seq: i for i in items if isinstance(i, NotaryReceipt)}

    first, second = committed.entry.seq, accepted["seq"]
    seen = {who.name: full(await whole_log(who)) for who in (kennedy, castro, thant, khrushchev)}
    assert first in seen[kennedy.name] and second not in seen[kennedy.name]
    assert first not in seen[castro.name] and second in seen[castro.name]
    assert {first, second} <= set(seen[thant.name])  # the mediator carries it: it reads both
    assert not {first, second} & set(seen[khrushchev.name])
    assert all(
        digest not in (i.to_bytes() if isinstance(i, NotaryLink) else i.entry.value)
        for i in await whole_log(kennedy)
    )

    # Where the pair may write directly, a named mediator changes nothing of what they see.
    direct = os.urandom(32)
    await kennedy.client.request("POST", "/v1/notary/commitments", {
        "commitment": b64(direct), "addressees": [khrushchev.name], "via": thant.name,
    })  # fmt: skip
    assert any(r.entry.subject == direct for r in full(await whole_log(khrushchev)).values())


def wrong_advice(error: Any) -> str:
    assert (error.status, error.code) == (403, "policy_forbids")
    return str(error.message)


# --- item 6: prekey bundles ---------------------------------------------------------------------


async def test_prekey_bundles_go_to_whom_may_write_at_a_bounded_pace_and_the_owner_hears(
    policed: tuple[Backend, Relay], cast: Cast, tmp_path: Path
) -> None:
    _, relay = policed
    m = await exercise(policed, cast, tmp_path)
    kennedy, khrushchev, castro, watcher = (m[k] for k in ("kennedy", "khrushchev", "castro",
                                                           "watcher"))  # fmt: skip
    outsider = await cast.join(relay, "outsider")
    observer = await cast.join(relay, "observer", role="observer")

    stranger = await refused(bundle(outsider, kennedy))
    assert (stranger.status, stranger.code) == (403, "policy_forbids")
    assert "not roles of one exercise" in stranger.message
    for looker in (watcher, observer):
        role = await refused(bundle(looker, kennedy if looker is watcher else outsider))
        assert (role.status, role.code) == (403, "role_forbids")
    # Through a mediator a letter is still encrypted to its recipient: Castro gets a bundle.
    await bundle(castro, kennedy)

    for _ in range(4):  # a client takes one per new session: four, then one every ten minutes
        await bundle(khrushchev, kennedy)
    slow = await refused(bundle(khrushchev, kennedy))
    assert (slow.status, slow.code) == (429, "prekey_fetch_limited")
    assert slow.retry_after is not None and slow.retry_after > 0

    own = await kennedy.client.prekey_counts()
    assert own["one_time_prekeys"] == 10 - 5  # refused fetches took none
    assert own["taken_last_hour"] == 5 and own["draining"] is True  # one fetcher took four
    quiet = await khrushchev.client.prekey_counts()
    assert quiet["taken_last_hour"] == 0 and quiet["draining"] is False
    await bundle(kennedy, khrushchev)
    once = await khrushchev.client.prekey_counts()
    assert once["taken_last_hour"] == 1 and once["draining"] is False


# --- item 7: roles --------------------------------------------------------------------------------


async def test_an_observer_receives_and_sends_nothing_on_any_route(
    policed: tuple[Backend, Relay], cast: Cast
) -> None:
    """An observer outside every exercise: the role it registered with holds on its own."""
    _, relay = policed
    party = await cast.join(relay, "party")
    observer = await cast.join(relay, "observer", role="observer")
    proposal = os.urandom(32)
    await commit(party, [observer], proposal)  # a proposal shown to an observer: fine
    await party.client.send([envelope(party.name, observer.name)])  # observers receive

    for call in (
        observer.client.send([envelope(observer.name, party.name)]),
        open_drop(observer),
        commit(observer, [party], os.urandom(32)),
        state(observer, "acceptance", proposal, os.urandom(32)),
        observer.client.request("POST", "/v1/notary/keys", {
            "commitment": b64(proposal), "key": b64(os.urandom(32)), "release_at_ms": 0,
        }),
        bundle(observer, party),
    ):  # fmt: skip
        forbidden = await refused(call)
        assert (forbidden.status, forbidden.code) == (403, "role_forbids")
        assert "observer" in forbidden.message

    page, _ = await observer.client.mailbox()
    assert len(page) == 1 and await observer.client.acknowledge([page[0].id]) == 1
    assert (await observer.client.prekey_counts())["one_time_prekeys"] == 10
    mine = [i for i in await whole_log(observer) if isinstance(i, NotaryReceipt)]
    assert [r.entry.subject for r in mine] == [proposal]


# --- drops: who opens them, and how many ----------------------------------------------------------


async def test_a_participant_opens_a_bounded_number_of_drops_and_only_with_a_direct_channel(
    policed: tuple[Backend, Relay], cast: Cast, tmp_path: Path
) -> None:
    _, relay = policed
    first, second = await cast.join(relay, "first"), await cast.join(relay, "second")
    bad = await refused(open_drop(first, expires_in=-5))
    assert bad.code == "bad_expiry"  # refused: it takes nothing of the quota
    for _ in range(DROPS_EACH):
        await open_drop(first)
    full = await refused(open_drop(first))
    assert (full.status, full.code) == (429, "too_many_drops_opened")
    assert full.retry_after is not None and full.retry_after > 0
    await open_drop(second)  # a quota per participant: the relay's cap is not exhausted

    island = await exercise(policed, cast, tmp_path, template=ISLAND,
                            kinds=(("lone", "party"), ("other", "party")))  # fmt: skip
    alone = await refused(open_drop(island["lone"]))
    assert (alone.status, alone.code) == (403, "policy_forbids")
    assert "no direct channel to anyone" in alone.message


# --- item 10: the notary's terms, and logging out -------------------------------------------------


async def test_the_notary_signs_the_terms_it_enforces_into_the_commitment_entry(
    policed: tuple[Backend, Relay], cast: Cast
) -> None:
    """An author who notarises an earlier expiry, or a confederate as a second addressee, than
    the proposal names gets a receipt that the proposal's record refuses: the addressee's client
    (and any reviewer) sees the trick at once. Honest terms check, and cannot be changed."""
    _, relay = policed
    author, addressee = await cast.join(relay, "author"), await cast.join(relay, "addressee")
    confederate = await cast.join(relay, "confederate")
    async with RelayClient(relay.url) as anyone:
        key = SigningPublicKey.from_bytes(base64.b64decode((await anyone.info())["notary_key"]))

    def sealed_offer(by: Member, to: Member, expires_at_ms: int) -> Any:
        proposal = Proposal(
            os.urandom(16), party(by), (party(to),), "Missiles out", ("They leave.",),
            int(time.time() * 1000), expires_at_ms,
        )  # fmt: skip
        return seal(by.identity, proposal, os.urandom(32))

    expires = int(time.time() * 1000) + 3_600_000
    for addressees, notarised_expiry in (
        ([addressee], expires - 60_000),  # an hour in the offer, 59 minutes at the notary
        ([addressee, confederate], expires),  # a confederate who would accept first
    ):
        offer = sealed_offer(author, addressee, expires)
        answer = await commit(author, addressees, offer.commitment, notarised_expiry)
        receipt = NotaryReceipt.from_bytes(base64.b64decode(answer["receipt"]))
        receipt.verify(key)  # the notary's signature is good...
        with pytest.raises(NotaryError):  # ...but not over this proposal's terms
            ProposalRecord(offer, receipt).check(key)

    honest = sealed_offer(author, addressee, expires)
    answer = await commit(author, [addressee], honest.commitment, expires)
    receipt = NotaryReceipt.from_bytes(base64.b64decode(answer["receipt"]))
    ProposalRecord(honest, receipt).check(key)
    assert receipt.entry.value == honest.terms
    assert await commit(author, [addressee], honest.commitment, expires) == answer  # a retry
    changed = await refused(commit(author, [addressee], honest.commitment, expires - 1))
    assert (changed.status, changed.code) == (409, "already_committed")
    twice = await refused(commit(author, [addressee, addressee], os.urandom(32)))
    assert (twice.status, twice.code) == (400, "invalid_field")


def party(member: Member) -> Party:
    return Party.of(member.name, member.identity.public)


async def test_logout_revokes_the_token_it_presents_and_no_other(
    policed: tuple[Backend, Relay], cast: Cast
) -> None:
    _, relay = policed
    member = await cast.join(relay, "leaving")
    first = member.client.token
    other = RelayClient(relay.url)
    try:
        await other.login(member.identity, member.name)  # a second session of the same name
        assert (await member.client.request("POST", "/v1/auth/logout", {})) == {"revoked": True}
        member.client.token = first
        gone = await refused(member.client.directory())
        assert (gone.status, gone.code) == (401, "bad_token")
        assert await other.directory()  # the other session goes on
        again = await refused(member.client.request("POST", "/v1/auth/logout", {}))
        assert again.status == 401
    finally:
        await other.close()


async def test_a_token_revoked_on_one_process_stops_on_the_others(postgres: Backend) -> None:
    """Several processes on one PostgreSQL database: each may remember a token it checked, for
    a few seconds only (`TOKEN_RECHECK_SECONDS`), so a logout holds everywhere soon after."""
    from backchannel_relay.store import TOKEN_RECHECK_SECONDS

    first, second = make_relay(postgres, *GENEROUS), make_relay(postgres, *GENEROUS)
    member = await join(first, "twice")
    elsewhere = RelayClient(second.url)
    try:
        elsewhere.token = member.client.token
        assert await elsewhere.directory()  # the second process now remembers the token
        await member.client.logout()
        deadline = time.monotonic() + TOKEN_RECHECK_SECONDS + 5
        while True:
            try:
                await elsewhere.directory()
            except Exception as exc:
                assert getattr(exc, "status", None) == 401
                break
            assert time.monotonic() < deadline, "the revoked token still works elsewhere"
            await asyncio.sleep(0.2)
    finally:
        await elsewhere.close()
        await member.client.close()
        first.kill()
        second.kill()


def test_the_roles_a_relay_knows() -> None:
    """Every registration role the relay issues invites for is either one that sends or one
    that only receives: a new role must say which."""
    from backchannel_relay.access import RECEIVE_ONLY
    from backchannel_relay.names import ROLES

    assert set(ROLES) >= RECEIVE_ONLY and set(ROLES) - RECEIVE_ONLY == {"party", "mediator"}
