"""Deterministic training order over one or several datasets (weighted mixtures).

The order is a pure function of (sizes, weights, seed), so a resumed run regenerates it and
skips to its position instead of storing it, and every process sees the same global batches.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


def mixture_stream(sizes: Sequence[int], weights: Sequence[float] | None, seed: int) -> Iterator[tuple[int, int]]:
    """Endless stream of ``(dataset_index, example_index)``.

    Without weights the datasets are concatenated and shuffled, one full pass at a time (each
    example once per epoch). With weights, each draw picks dataset ``i`` with probability
    ``weights[i] / sum(weights)`` and takes that dataset's next example from its own shuffled
    pass, reshuffled whenever it runs out (so small datasets are repeated, large ones subsampled).
    """
    if any(size <= 0 for size in sizes):
        raise ValueError(f"every dataset needs at least one example, sizes={list(sizes)}")
    rng = random.Random(seed)
    if weights is None:
        flat = [(d, i) for d, size in enumerate(sizes) for i in range(size)]
        while True:
            order = list(flat)
            rng.shuffle(order)
            yield from order
    if len(weights) != len(sizes) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights {list(weights)} must be {len(sizes)} non-negative numbers, not all zero")
    passes = [_shuffled(size, seed, d, 0) for d, size in enumerate(sizes)]
    cursor = [0] * len(sizes)
    pass_index = [0] * len(sizes)
    datasets = list(range(len(sizes)))
    while True:
        d = rng.choices(datasets, weights=weights)[0]
        if cursor[d] == sizes[d]:
            pass_index[d] += 1
            passes[d] = _shuffled(sizes[d], seed, d, pass_index[d])
            cursor[d] = 0
        yield d, passes[d][cursor[d]]
        cursor[d] += 1


def _shuffled(size: int, seed: int, dataset: int, epoch: int) -> list[int]:
    order = list(range(size))
    random.Random(f"{seed}-{dataset}-{epoch}").shuffle(order)
    return order


def batched(stream: Iterator, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the stream is endless, so every batch is full)."""
    while True:
        batch = [next(stream) for _ in range(size)]
        yield batch
