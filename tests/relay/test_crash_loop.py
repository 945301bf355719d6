"""A bounded crash loop in the suite (2,000 envelopes, 5 SIGKILLs): on SQLite one relay process,
on PostgreSQL two sharing the database with either killed. Scored as Jepsen's queue checker
scores (`queue_checker`): nothing lost, duplicated after acknowledgement, unexpected, stored
twice or resurrected; redeliveries before an acknowledgement landed are printed, not failed.
The long run is `python -m tests.relay.crash_loop` (README, Development)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Backend
from .crash_loop import Plan, crash_loop
from .test_durability_and_hygiene import own_store


@pytest.fixture
def store(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    """A store of the test's own: its relays are the first there and print the admin token."""
    if backend.name == "postgresql":
        fresh: Backend = request.getfixturevalue("fresh_postgres")
        return fresh
    return own_store(backend, tmp_path)


async def test_a_crash_loop_loses_duplicates_and_resurrects_nothing(
    backend: Backend, store: Backend
) -> None:
    processes = 2 if backend.name == "postgresql" else 1
    outcome = await crash_loop(store, Plan(envelopes=2000, kills=5, timeout=120), processes)
    print(f"\n{backend.name}: {outcome.report()}")
    found = outcome.score
    assert len(outcome.kills) == 5
    assert found.receipted == found.attempted == 2000  # every sender got through in the end
    assert found.ok, f"{found.summary()}; examples: {found.examples}"
    assert found.read == 2000
    assert outcome.failures > 0, "the kills hit requests in flight"
