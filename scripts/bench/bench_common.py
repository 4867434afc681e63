"""Measurements every benchmark of this folder takes the same way (imported by its siblings,
which run as scripts with this folder first on sys.path)."""

from __future__ import annotations

import resource


def peak_rss() -> int:
    """Peak resident memory of this process, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_gpu() -> int | None:
    """Peak CUDA memory allocated by this process, in bytes; None without a GPU."""
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
