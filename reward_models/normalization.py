"""Reward normalisation: gain and bias so that reference samples score mean 0, std 1.

Typically fitted on the SFT policy's own samples after RM training, so that PPO starts from
rewards of a known scale. Stored as ``normalization.json`` next to the reward model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import torch

NORMALIZATION_FILE = "normalization.json"

Scores = Union[torch.Tensor, Sequence[float], float]


def fit_normalization(scores: Union[torch.Tensor, Sequence[float]]) -> dict:
    """``{"gain", "bias"}`` with ``gain * s + bias`` of mean 0 and (population) std 1 over ``scores``.

    Raises ValueError for fewer than 2 scores, non-finite scores, or scores that are all equal.
    """
    values = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if values.numel() < 2:
        raise ValueError(f"fit_normalization needs at least 2 scores, got {values.numel()}")
    if not torch.isfinite(values).all():
        raise ValueError("fit_normalization: scores contain NaN or infinity")
    mean = values.mean().item()
    std = values.std(correction=0).item()
    if not std > 1e-12 * max(1.0, abs(mean)):
        raise ValueError(
            f"fit_normalization: the {values.numel()} scores are all equal ({mean:g}), std 0; "
            "cannot scale them to std 1 (is the reward model untrained or the sample degenerate?)"
        )
    return {"gain": 1.0 / std, "bias": -mean / std}


def apply_normalization(scores: Scores, norm: Optional[dict]):
    """``gain * scores + bias``; a tensor stays a tensor, a list gives a list, a number a number.

    ``norm`` None returns ``scores`` unchanged.
    """
    if norm is None:
        return scores
    gain, bias = float(norm["gain"]), float(norm["bias"])
    if isinstance(scores, torch.Tensor):
        return scores * gain + bias
    if isinstance(scores, (int, float)):
        return float(scores) * gain + bias
    return [float(s) * gain + bias for s in scores]


def save_normalization(out_dir: Union[str, Path], norm: dict, **info) -> Path:
    """Write ``out_dir/normalization.json`` (gain, bias and any ``info``), atomically."""
    _check(norm, "save_normalization")
    path = Path(out_dir) / NORMALIZATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**info, "gain": float(norm["gain"]), "bias": float(norm["bias"])}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    return path


def load_normalization(out_dir: Union[str, Path]) -> Optional[dict]:
    """The dict saved by :func:`save_normalization`, or None when there is no such file."""
    path = Path(out_dir) / NORMALIZATION_FILE
    if not path.is_file():
        return None
    try:
        norm = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    _check(norm, str(path))
    return norm


def _check(norm, where: str) -> None:
    if not isinstance(norm, dict):
        raise ValueError(f"{where}: normalisation must be a dict with gain and bias, got {type(norm).__name__}")
    for key in ("gain", "bias"):
        value = norm.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: '{key}' must be a finite number, got {value!r}")
