"""Where parameters live, for code outside the training engine: this process's device for
quantised weights, and whole copies of ZeRO-3 partitioned parameters for an in-place edit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch


def local_device_map() -> dict[str, int]:
    """``device_map`` that puts a whole model on this process's GPU (``LOCAL_RANK`` of a launch)."""
    return {"": int(os.environ.get("LOCAL_RANK", 0))}


@contextlib.contextmanager
def full_parameters(params: Sequence[torch.nn.Parameter], modifier_rank: int = 0) -> Iterator[None]:
    """Inside the block every parameter in ``params`` is whole; changes made by ``modifier_rank``
    are scattered back on exit. Parameters that ZeRO-3 did not partition pass through untouched."""
    if not any(hasattr(p, "ds_id") for p in params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(params), modifier_rank=modifier_rank):
        yield
