"""The DPO stage on builtin:tiny: first loss ln 2, learning, the three reference modes, resume."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config.loader import load_config
from rlhf.stages.dpo import DPOConfig, run

FAST = [
    "tracking.mode=disabled",
    "tracking.progress=false",
    "eval_steps=0",
    "data.max_length=96",
    "batch.micro_batch_size=8",
    "checkpoint.save_steps=0",
    "model.name_or_path=builtin:tiny",
    "data.train=['builtin:judged-pairwise?n=200']",
    "data.eval=['builtin:judged-pairwise?n=40&seed=9']",
]


def dpo(tmp_path, name, *extra):
    cfg = load_config(DPOConfig, "configs/dpo/tiny.yaml", [f"output_dir={tmp_path / name}", *FAST, *extra])
    return run(cfg), tmp_path / name


def test_first_loss_is_ln2_and_preferences_are_learned(tmp_path):
    summary, out = dpo(
        tmp_path, "run", "max_steps=100", "optim.lr=1e-3", "data.train=['builtin:judged-pairwise?n=800']"
    )
    assert summary["first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["margins"] == pytest.approx(0.0, abs=1e-5)
    # From a randomly initialised model (no SFT), 100 steps: clearly above chance, loss below ln 2.
    assert summary["eval_accuracy"] > 0.65 and summary["eval_margins"] > 0
    assert summary["eval_loss"] < math.log(2) - 0.05
    assert (out / "reference_logps.safetensors").is_file() and (out / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("reference", ["copy", "lora_disabled"])
def test_reference_modes_agree_with_precompute(tmp_path, reference):
    extra = ["max_steps=3", "model.adapt.strategy=lora", "model.adapt.lora_r=4"]
    base, _ = dpo(tmp_path, "precompute", *extra)
    other, _ = dpo(tmp_path, reference, *extra, f"reference={reference}")
    assert other["first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert other["final_loss"] == pytest.approx(base["final_loss"], rel=1e-4)
    assert other["eval_loss"] == pytest.approx(base["eval_loss"], rel=1e-4)


def test_resume_uses_the_cached_reference_and_matches(tmp_path):
    common = ["max_steps=6", "checkpoint.save_steps=3", "checkpoint.keep_last=0"]
    _, full = dpo(tmp_path, "full", *common)
    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoints" / "step-00000003", resumed / "checkpoints" / "step-00000003")
    shutil.copy(full / "reference_logps.safetensors", resumed / "reference_logps.safetensors")
    dpo(tmp_path, "resumed", *common, "checkpoint.resume_from=latest")
    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(resumed / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_copy_reference_is_evaluated_under_the_policy_precision(tmp_path):
    # lr 0 keeps the policy at its initial weights, which the copy holds too: under bf16 (autocast
    # on CPU) the evaluation's implicit rewards are exactly 0 only if both run under autocast.
    summary, _ = dpo(
        tmp_path, "bf16", "max_steps=1", "optim.lr=0.0", "precision.mixed_precision=bf16", "reference=copy"
    )
    assert summary["mixed_precision"] == "bf16" and summary["reference"] == "copy"
    assert summary["eval_rewards_chosen"] == 0.0 and summary["eval_rewards_rejected"] == 0.0
    assert summary["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)  # ln 2 in float32


@pytest.mark.parametrize(
    "adapt,reference",
    [("full", "precompute"), ("lora", "lora_disabled"), ("lora", "precompute"), ("full", "copy")],
)
def test_shared_prompt_rows_train_as_separate_rows_do(tmp_path, adapt, reference):
    """The same losses, metrics and weights with the prompt computed once, in the policy's and the
    reference's passes (precompute included), as with chosen and rejected as separate rows."""
    extra = ["max_steps=3", "optim.lr=1e-3", f"model.adapt.strategy={adapt}", f"reference={reference}"]
    extra += ["batch.micro_batch_size=4", "batch.grad_accum=2", "model.adapt.lora_r=4"]
    runs = {}
    for name, layout in {
        "separate": ["data.shared_prompt=false"],
        "shared": ["data.shared_prompt=true", "data.row_tokens=300"],
    }.items():
        summary, out = dpo(tmp_path, name, *extra, *layout)
        rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in rows if "tokens_computed" in r]
        weights = "adapter_model.safetensors" if adapt == "lora" else "model.safetensors"
        runs[name] = (summary, steps, load_file(str(out / "model" / weights)))
    (base, base_steps, base_weights), (shared, steps, weights) = runs["separate"], runs["shared"]
    for key in ("loss", "margins", "accuracy", "nll_chosen"):
        assert [r[key] for r in steps] == pytest.approx([r[key] for r in base_steps], abs=1e-5), key
    reply_tokens = [r["tokens_per_s"] * r["step_time_s"] for r in steps]
    assert reply_tokens == pytest.approx([r["tokens_per_s"] * r["step_time_s"] for r in base_steps], rel=1e-6)
    assert shared["eval_loss"] == pytest.approx(base["eval_loss"], abs=1e-5)
    for key, value in base_weights.items():
        torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=0, msg=key)
    assert sum(r["tokens_computed"] for r in steps) < 0.8 * sum(r["tokens_computed"] for r in base_steps)
