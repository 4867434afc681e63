"""Training order: deterministic, one full pass per epoch, weighted mixtures in proportion."""

from collections import Counter
from itertools import islice

from preference_data.sampling import mixture_stream


def test_unweighted_stream_is_a_permutation_per_epoch_and_deterministic():
    first = list(islice(mixture_stream([3, 2], None, seed=1), 10))
    assert sorted(first[:5]) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert sorted(first[5:]) == sorted(first[:5])
    assert first == list(islice(mixture_stream([3, 2], None, seed=1), 10))
    assert first != list(islice(mixture_stream([3, 2], None, seed=2), 10))


def test_weighted_mixture_follows_the_weights():
    draws = Counter(d for d, _ in islice(mixture_stream([10, 1000], [3, 1], seed=0), 8000))
    assert abs(draws[0] / 8000 - 0.75) < 0.02
    # The small dataset is cycled through whole passes: every example appears equally often.
    small = Counter(i for d, i in islice(mixture_stream([10, 1000], [3, 1], seed=0), 8000) if d == 0)
    assert max(small.values()) - min(small.values()) <= 1
