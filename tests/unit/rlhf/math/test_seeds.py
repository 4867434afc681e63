"""rlhf.math.seeds.derive_seed: the one way a stream's seed is made from the run's seed."""

from __future__ import annotations

import pytest

from rlhf.math.seeds import derive_seed


def test_hand_computed_values():
    assert derive_seed(0) == 0
    assert derive_seed(3, 2) == 3 * 1_000_003 + 2
    # a PPO generation chunk: (seed * 1_000_003 + step) * 100_003 + index in the global batch
    assert derive_seed(1, 5, 16) == (1 * 1_000_003 + 5) * 100_003 + 16 == 100_003_800_040
    assert derive_seed(1, 5, 16, 1) == 100_003_800_040 * 1_009 + 1
    assert derive_seed(2, 0, 0, 0, 7) == ((2 * 1_000_003 * 100_003) * 1_009) * 101 + 7


def test_large_values_stay_in_the_range_torch_generators_take():
    unreduced = (((2**40 * 1_000_003 + 2**20) * 100_003 + 2**16) * 1_009 + 2**8) * 101 + 3
    assert unreduced > 2**63  # the modulus is exercised
    seed = derive_seed(2**40, 2**20, 2**16, 2**8, 3)
    assert seed == unreduced % (2**63 - 1) and 0 <= seed < 2**63 - 1


def test_positions_give_distinct_seeds():
    seen = {derive_seed(7, step, index) for step in range(1, 50) for index in range(0, 256)}
    assert len(seen) == 49 * 256


def test_too_many_parts_is_refused():
    with pytest.raises(ValueError, match="at most 4 parts"):
        derive_seed(0, 1, 2, 3, 4, 5)
