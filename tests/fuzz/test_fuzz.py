"""Every decoder, briefly fuzzed on each `make test`: arbitrary bytes and mutated valid encodings
get a value or the decoder's own error, never a crash (`targets.py` says what each checks).

A longer run of one target: `python -m tests.fuzz.run --target NAME --seconds N` (`make fuzz`).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings

from .strategies import fuzz_input
from .targets import REGRESSIONS, TARGETS

EXAMPLES = 150


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_decoder_survives_fuzzing(name: str) -> None:
    target = TARGETS[name]
    seeds = target.seeds()
    for seed in seeds:  # the valid encodings themselves decode (and re-encode) cleanly
        target.run(seed)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(fuzz_input(seeds))
    def fuzz(data: bytes) -> None:
        target.run(data)

    for data in REGRESSIONS.get(name, []):
        fuzz = example(data)(fuzz)
    fuzz()


def test_every_regression_names_a_target() -> None:
    assert set(REGRESSIONS) <= set(TARGETS)
