"""DPO's precomputed reference log-probs: computed once with the initial policy, kept on disk
with the fingerprint of what made them.

``reference_logps.safetensors`` in the output folder holds the ``train`` and ``eval`` tables
([pairs, 2]: chosen, rejected; float64) and, as safetensors metadata, the fingerprint of
everything that sets their values: the reference model (the starting policy; its folder's
content fingerprint, which covers the tokenizer saved with it, or name and revision for a Hub
name), the rest of the model section, the exact token ids and labels of every train and eval
pair, max_length, length normalisation, mixed precision and the pad token. A cache whose
fingerprint differs in any key, or that cannot be read, is recomputed, and the reason printed.
No pickle is ever read: an older ``reference_logps.pt`` is left where it is, unread.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from pathlib import Path
from typing import Optional

import torch

from rlhf.config.loader import to_dict
from rlhf.models.fingerprint import model_fingerprint
from rlhf.stages import common
from rlhf.stages.dpo_logps import sequence_logps

FILE_NAME = "reference_logps.safetensors"
LEGACY_NAME = "reference_logps.pt"
_VERSION = "1"
# model keys that do not change a log-prob (memory only)
_NUMERICALLY_INERT = ("name_or_path", "gradient_checkpointing")


def pairs_digest(pairs) -> str:
    """sha256 over the token ids and labels of each pair's chosen and rejected row, in order."""
    digest = hashlib.sha256()
    for pair in pairs:
        for row in (pair.chosen, pair.rejected):
            for values in (row.input_ids, row.labels):
                digest.update(len(values).to_bytes(8, "little") + array("q", values).tobytes())
    return digest.hexdigest()


def fingerprint(cfg, train, evaluation, *, pad_id: int, mixed_precision: str) -> dict[str, str]:
    """What made the reference log-probs of this run, key by key (safetensors metadata is str -> str)."""
    model = {k: v for k, v in to_dict(cfg.model).items() if k not in _NUMERICALLY_INERT}
    return {
        "version": _VERSION,
        "reference_model": model_fingerprint(cfg.model.name_or_path, cfg.model.revision),
        "model_settings": json.dumps(model, sort_keys=True),
        "pad_token_id": str(pad_id),
        "train_pairs": pairs_digest(train),
        "eval_pairs": pairs_digest(evaluation),
        "max_length": str(cfg.data.max_length),
        "length_normalize": str(cfg.dpo.resolved_length_normalize()),
        "mixed_precision": str(mixed_precision),
        # Shared-prompt rows agree with separate ones to float rounding, not bit for bit.
        "shared_prompt": str(cfg.data.shared_prompt),
    }


def load(path: Path, expected: dict[str, str], sizes: dict[str, int]) -> tuple[Optional[dict], str]:
    """(tables, "") for a cache made as ``expected``; else (None, why it cannot be used)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        legacy = path.with_name(LEGACY_NAME)
        return None, (f"{legacy} is in an old format, not read" if legacy.exists() else "")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            tables = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        return None, f"{path} is damaged ({err})"
    changed = [key for key in sorted(set(metadata) | set(expected)) if metadata.get(key) != expected.get(key)]
    if changed:
        return None, f"{path} was made with another {', '.join(changed)}"
    for split, rows in sizes.items():
        table = tables.get(split)
        if table is None or tuple(table.shape) != (rows, 2):
            shape = None if table is None else tuple(table.shape)
            return None, f"{path} is damaged ({split}: expected shape ({rows}, 2), found {shape})"
    return tables, ""


def save(path: Path, tables: dict[str, torch.Tensor], made_with: dict[str, str]) -> None:
    """Writes the cache under a temporary name and renames it into place."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tables.items()}, str(tmp), metadata=made_with)
    tmp.replace(path)


@torch.no_grad()
def _reference_logps(model, pairs, backend, cfg, pad_id: int) -> torch.Tensor:
    """[N, 2] reference log-probs of every pair, computed with ``model`` on all processes."""
    model.eval()
    rows = []
    for chunk in common.eval_shards(len(pairs), backend, cfg.batch.micro_batch_size):
        chosen, rejected, _, _ = sequence_logps(
            model, [pairs[i] for i in chunk] or pairs[:1], pad_id, backend.device, cfg
        )
        rows += [(i, float(c), float(r)) for i, c, r in zip(chunk, chosen.tolist(), rejected.tolist())]
    model.train()
    table = torch.zeros(len(pairs), 2, dtype=torch.float64)
    for i, c, r in backend.gather_objects(rows):
        table[i] = torch.tensor([c, r], dtype=torch.float64)
    return table


def cached_or_computed(cfg, model, train, evaluation, backend, pad_id: int) -> dict[str, torch.Tensor]:
    """Reference log-probs from the initial policy, cached in the output folder for resumes and
    reused only when made by the same reference, pairs and settings (see the module docstring)."""
    path = Path(cfg.output_dir) / FILE_NAME
    made_with = fingerprint(cfg, train, evaluation, pad_id=pad_id, mixed_precision=backend.mixed_precision)
    cache, why = load(path, made_with, {"train": len(train), "eval": len(evaluation)})
    if cache is not None:
        return cache
    if why and backend.is_main:
        print(f"dpo: reference log-probs cache not used, recomputing: {why}", flush=True)
    cache = {
        "train": _reference_logps(model, train, backend, cfg, pad_id),
        "eval": _reference_logps(model, evaluation, backend, cfg, pad_id),
    }
    if backend.is_main:
        save(path, cache, made_with)
    backend.barrier()
    return cache
