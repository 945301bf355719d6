"""The crash-loop scorer on made-up histories: each failure it must find, and the at-least-once
redeliveries it must report without failing."""

from __future__ import annotations

from .queue_checker import History, Landed, Read, score

A, B, C, D = (bytes([n]) * 16 for n in range(1, 5))


def clean() -> History:
    """A and B sent and receipted, read once each, acknowledged; C sent but never receipted
    (the relay died under the request) and never read: not lost, nothing promised."""
    return History(
        attempted={A, B, C},
        receipts=[(A, 1), (B, 2)],
        reads=[Read(A, 1, issued_at=3), Read(B, 2, issued_at=3)],
        landed=[Landed((1, 2), at=5)],
    )


def test_a_clean_history_scores_zero() -> None:
    found = score(clean())
    assert found.ok and found.examples == {}
    assert (found.attempted, found.receipted, found.read, found.reads) == (3, 2, 2, 2)
    assert "lost 0" in found.summary()


def test_a_receipted_message_never_read_is_lost() -> None:
    history = clean()
    history.receipts.append((D, 7))
    history.attempted.add(D)
    found = score(history)
    assert (found.lost, found.ok) == (1, False)
    assert found.examples["lost"] == [D.hex()]


def test_an_unreceipted_message_that_was_read_is_fine_and_one_never_sent_is_unexpected() -> None:
    history = clean()
    history.reads.append(Read(C, 3, issued_at=6))
    assert score(history).ok
    history.reads.append(Read(D, 4, issued_at=6))
    found = score(history)
    assert (found.unexpected, found.ok) == (1, False)


def test_a_retry_answered_with_the_same_relay_id_is_not_stored_twice() -> None:
    history = clean()
    history.receipts.append((A, 1))  # `duplicate: true`, the original receipt
    assert score(history).ok
    history.receipts.append((B, 9))  # a second copy under another relay id
    found = score(history)
    assert (found.stored_twice, found.ok) == (1, False)


def test_a_second_copy_found_only_by_reading_is_stored_twice() -> None:
    history = clean()
    history.reads.append(Read(A, 8, issued_at=4))  # before the ack landed: not duplicated yet
    found = score(history)
    assert (found.stored_twice, found.duplicated, found.resurrected) == (1, 0, 0)


def test_a_read_before_its_ack_landed_is_a_redelivery_not_a_failure() -> None:
    history = clean()
    history.reads.append(Read(A, 1, issued_at=4))  # e.g. a kill between read and ack
    history.reads.append(Read(B, 2, issued_at=5))  # issued as the ack landed: in flight
    found = score(history)
    assert found.ok and found.redelivered == 2 and found.reads == 4


def test_a_read_issued_after_the_ack_landed_is_resurrected_and_duplicated() -> None:
    history = clean()
    history.reads.append(Read(A, 1, issued_at=6))
    found = score(history)
    assert (found.resurrected, found.duplicated, found.redelivered, found.ok) == (1, 1, 0, False)
    assert found.examples["resurrected"] == ["1"]


def test_another_copy_read_after_the_first_was_acknowledged_is_duplicated() -> None:
    """Stored under two relay ids: acknowledging one leaves the other to be read again, which
    de-duplication by message id only hides if the reader remembers every id forever."""
    history = clean()
    history.reads.append(Read(B, 11, issued_at=9))
    found = score(history)
    assert (found.duplicated, found.stored_twice, found.resurrected) == (1, 1, 0)


def test_the_earliest_landing_of_an_acknowledgement_counts() -> None:
    history = clean()
    history.landed.append(Landed((1,), at=2))  # the same id acknowledged earlier as well
    history.reads.append(Read(A, 1, issued_at=3))  # same time as the first read...
    found = score(history)
    assert found.resurrected == 1  # ...issued after the earlier ack landed
