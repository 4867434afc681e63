"""DPO's cached reference log-probs: reused only when made by the same reference, data and settings."""

import math
import shutil

import pytest
import torch

from rlhf.config.loader import load_config
from rlhf.stages.dpo import DPOConfig, run

FAST = [
    "tracking.mode=disabled",
    "tracking.progress=false",
    "eval_steps=0",
    "max_steps=1",
    "data.max_length=64",
    "batch.micro_batch_size=16",
    "checkpoint.save_steps=0",
    "model.name_or_path=builtin:tiny",
    "data.train=['builtin:judged-pairwise?n=32']",
    "data.eval=['builtin:judged-pairwise?n=8&seed=9']",
    "reference=precompute",
]
BETA = 0.3  # dpo.beta of configs/dpo/tiny.yaml


def dpo(out, *extra):
    return run(load_config(DPOConfig, "configs/dpo/tiny.yaml", [f"output_dir={out}", *FAST, *extra]))


def interrupted(out, *extra):
    """A run of ``out`` stopped after its reference log-probs were cached, before any checkpoint."""
    dpo(out, *extra)
    for name in ("checkpoints", "model"):
        shutil.rmtree(out / name)
    (out / "summary.json").unlink()
    return out


def resume(out, *extra):
    return dpo(out, *extra, "checkpoint.resume_from=latest")


def _save_model(folder, perturb: bool) -> str:
    """builtin:tiny (same tokenizer) into ``folder``, its weights perturbed if asked."""
    from rlhf.config.sections import ModelConfig
    from rlhf.models.loading import load_causal_lm, load_tokenizer

    model = load_causal_lm(ModelConfig(name_or_path="builtin:tiny"), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters() if perturb else ():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(folder)
    load_tokenizer(ModelConfig(name_or_path="builtin:tiny")).save_pretrained(folder)
    return str(folder)


def test_a_cache_made_with_another_model_is_recomputed(tmp_path, capsys):
    # A cache made from one model folder lands in the folder of a run from another, with the same
    # config (copied between runs, or left by a folder reused by hand).
    first = _save_model(tmp_path / "first", perturb=False)
    second = _save_model(tmp_path / "second", perturb=True)
    made = interrupted(tmp_path / "made", f"model.name_or_path={first}")
    out = interrupted(tmp_path / "run", f"model.name_or_path={second}")
    for cache in made.glob("reference_logps*"):
        shutil.copy(cache, out / cache.name)
    capsys.readouterr()
    summary = resume(out, f"model.name_or_path={second}")
    # The reference is the initial policy again: chosen and rejected margins are 0 at step 1.
    assert summary["first_loss"] == pytest.approx(math.log(2), abs=1e-5)
    printed = capsys.readouterr().out
    assert f"recomputing: {out / 'reference_logps.safetensors'} was made with another reference_model" in printed


def test_a_run_whose_model_folder_was_retrained_in_place_is_not_resumed(tmp_path):
    from rlhf.runtime.run_folder import RunFolderError

    model = _save_model(tmp_path / "sft" / "model", perturb=False)
    out = interrupted(tmp_path / "run", f"model.name_or_path={model}")
    _save_model(model, perturb=True)
    with pytest.raises(RunFolderError, match="started from other models"):
        resume(out, f"model.name_or_path={model}")


def test_a_cache_made_with_another_normalisation_is_recomputed(tmp_path, capsys):
    made = interrupted(tmp_path / "made", "dpo.length_normalize=true")
    out = interrupted(tmp_path / "run")
    for cache in made.glob("reference_logps*"):
        shutil.copy(cache, out / cache.name)
    capsys.readouterr()
    summary = resume(out)
    assert summary["first_loss"] == pytest.approx(math.log(2), abs=1e-5)
    printed = capsys.readouterr().out
    assert f"recomputing: {out / 'reference_logps.safetensors'} was made with another length_normalize" in printed


def test_a_matching_cache_is_reused(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = interrupted(tmp_path / "run")
    # Shift every cached chosen log-prob by c (same fingerprint): a reused cache makes the step-1
    # DPO loss -log sigmoid(-beta c) = softplus(beta c) instead of ln 2.
    path = out / "reference_logps.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        tables = {key: f.get_tensor(key) for key in f.keys()}
    shift = 2.0
    for table in tables.values():
        table[:, 0] += shift
    save_file(tables, str(path), metadata=metadata)
    capsys.readouterr()
    summary = resume(out)
    assert summary["first_loss"] == pytest.approx(math.log1p(math.exp(BETA * shift)), abs=1e-5)
    assert "recomputing" not in capsys.readouterr().out


def test_a_damaged_cache_is_recomputed_and_an_old_pickle_never_loaded(tmp_path, capsys):
    out = interrupted(tmp_path / "run")
    (out / "reference_logps.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    # An old pickled cache with wrong numbers: it must not be read at all.
    torch.save({"train": torch.full((64, 2), 5.0), "eval": torch.full((64, 2), 5.0)}, out / "reference_logps.pt")
    capsys.readouterr()
    summary = resume(out)
    assert summary["first_loss"] == pytest.approx(math.log(2), abs=1e-5)
    printed = capsys.readouterr().out
    assert f"recomputing: {out / 'reference_logps.safetensors'} is damaged" in printed
    metadata = _metadata(out / "reference_logps.safetensors")
    assert metadata["length_normalize"] == "False" and metadata["max_length"] == "64"


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()
