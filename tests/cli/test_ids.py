"""The one ID rule (`backchannel_cli.ids`) on a real profile store: full IDs and unique
prefixes of 4 or more hex digits in either case, aliases (a letter's digest, the message that
carried a proposal, an exchange's offers), and a prefix that fits several refused with the list."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from backchannel_cli.errors import CliError
from backchannel_cli.ids import resolve
from backchannel_cli.localstore import HeldOffer, LocalStore, ProposalRow


def message(
    store: LocalStore, db: Any, ident: str, digest: str | None = None, kind: str = "letter"
) -> None:
    store.add_message(
        db, "text", id=ident, direction="in", peer="kennedy", kind=kind, sent_at=1,
        stored_at=1, status="delivered", verified="signed", in_reply_to=None, digest=digest,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    opened = LocalStore(tmp_path / "state.sqlite3", os.urandom(32))
    with opened.transaction() as db:
        message(opened, db, "abcd1111" + "0" * 24, digest="9999" + "1" * 60)
        message(opened, db, "abcd2222" + "0" * 24)
        message(opened, db, "cafe0000" + "0" * 24, kind="proposal")
        db.add(ProposalRow(digest="beef" + "2" * 60, commitment="c" * 64, direction="out",
                           peer="khrushchev", receipt=b"", stored_at=1,
                           message_id="cafe0000" + "0" * 24))  # fmt: skip
        message(opened, db, "cafe0000" + "0" * 23 + "1")
        db.add(HeldOffer(digest="dddd" + "3" * 60, exchange="eeee" + "4" * 28, author="a",
                         addressee="b", seq=1, sealed=b"", receipt=b""))  # fmt: skip
    return opened


def test_full_ids_and_unique_prefixes_in_either_case(store: LocalStore) -> None:
    with store.transaction() as db:
        assert resolve(db, "ABCD1111", "message").id == "abcd1111" + "0" * 24
        assert resolve(db, " abcd2 ", "message").id == "abcd2222" + "0" * 24
        assert resolve(db, "9999", "message").id == "abcd1111" + "0" * 24  # the letter's digest
        assert resolve(db, "beef", "proposal").id == "beef" + "2" * 60
        assert resolve(db, "dddd", "exchange").id == "eeee" + "4" * 28  # an offer's digest
        assert resolve(db, "EEEE", "exchange").id == "eeee" + "4" * 28


def test_the_message_that_carried_a_proposal_names_the_proposal(store: LocalStore) -> None:
    with store.transaction() as db:
        carried = "cafe0000" + "0" * 24
        found = resolve(db, carried, "message", "proposal")
        assert (found.kind, found.id) == ("proposal", "beef" + "2" * 60)
        assert resolve(db, carried, "message").id == carried  # where only messages are wanted
        assert resolve(db, "cafe00000000", "proposal").id == "beef" + "2" * 60


def test_a_prefix_that_fits_several_is_refused_with_the_list(store: LocalStore) -> None:
    with store.transaction() as db, pytest.raises(CliError) as raised:
        resolve(db, "abcd", "message")
    assert "fits 2 IDs" in raised.value.message
    assert "abcd11110000" in raised.value.message and "abcd22220000" in raised.value.message
    with store.transaction() as db, pytest.raises(CliError) as raised:
        resolve(db, "cafe", "message", "proposal")
    assert "proposal to khrushchev" in raised.value.message


@pytest.mark.parametrize("bad", ["", "abc", "abcg", "ab cd", "0x1234", "abcd%", "abcd_"])
def test_what_is_not_4_or_more_hex_digits_is_refused_with_the_rule(
    store: LocalStore, bad: str
) -> None:
    with store.transaction() as db, pytest.raises(CliError) as raised:
        resolve(db, bad, "message")
    assert "4 or more hex digits" in raised.value.message


def test_nothing_found_names_what_was_looked_for(store: LocalStore) -> None:
    with store.transaction() as db, pytest.raises(CliError) as raised:
        resolve(db, "0123", "proposal")
    assert raised.value.message.startswith("no proposal with id '0123'")
