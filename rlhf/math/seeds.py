"""Seeds derived from a run's seed, so that every random stream is a function of (seed, position).

A stream's seed depends on the run's seed and on integers that say where the stream is used
(step, position in the global batch, process, ...), never on how many processes share the work
or on what else consumed random numbers before. That is what makes a run the same on 1 and on
2 processes, and a resumed run the same as an uninterrupted one.
"""

from __future__ import annotations

# Odd primes, one per position: distinct tuples give distinct seeds for the ranges used here
# (each part smaller than the next multiplier).
_MULTIPLIERS = (1_000_003, 100_003, 1_009, 101)
_MODULUS = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit value


def derive_seed(seed: int, *parts: int) -> int:
    """``(((seed * 1_000_003 + parts[0]) * 100_003 + parts[1]) * 1_009 + parts[2]) ...`` mod 2**63 - 1.

    Args:
        seed: the run's seed (``cfg.seed``).
        parts: up to four non-negative integers naming the stream, outermost first, e.g.
            ``(step, index in the global batch)`` for a PPO generation chunk.
    """
    if len(parts) > len(_MULTIPLIERS):
        raise ValueError(f"derive_seed takes at most {len(_MULTIPLIERS)} parts, got {len(parts)}")
    value = seed
    for multiplier, part in zip(_MULTIPLIERS, parts):
        value = value * multiplier + part
    return value % _MODULUS
