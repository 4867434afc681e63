"""The reward-model stage end to end on builtin:tiny (CPU, seconds per run)."""

import json

import pytest
import torch

from rlhf.config.loader import load_config
from rlhf.stages.rm import RMConfig, run

FAST = [
    "tracking.mode=disabled",
    "tracking.progress=false",
    "eval_steps=0",
    "data.max_length=96",
    "batch.micro_batch_size=8",
    "checkpoint.save_steps=0",
]


def rm(tmp_path, config, name, *extra):
    cfg = load_config(RMConfig, f"configs/rm/{config}.yaml", [f"output_dir={tmp_path / name}", *FAST, *extra])
    return run(cfg), tmp_path / name


@pytest.mark.parametrize(
    "config,train",
    [
        ("tiny", "['builtin:judged-pairwise?n=200']"),
        ("tiny_ranked", "['builtin:judged-ranked?n=80']"),
        ("tiny_rated", "['builtin:judged-rated?n=80']"),
    ],
)
def test_each_data_kind_trains_and_beats_chance(tmp_path, config, train):
    summary, out = rm(
        tmp_path,
        config,
        config,
        f"data.train={train}",
        "max_steps=60",
        "optim.lr=2e-3",
        "data.eval=['builtin:judged-pairwise?n=100&seed=99']",
        "normalize.data=null",
    )
    assert summary["eval_pairs"] == 100
    assert summary["eval_accuracy"] > 0.7
    assert 0 <= summary["eval_ece"] <= 1 and summary["calibration"]
    assert (out / "reward_margins.png").stat().st_size > 1000
    losses = [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]
    assert sum(losses[-10:]) < sum(losses[:10])


def test_saved_model_loads_as_sequence_classifier_and_normalisation_applies(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reward_models.model import render_for_reward
    from reward_models.scorer import RewardModel

    summary, out = rm(
        tmp_path,
        "tiny",
        "run",
        "data.train=['builtin:judged-pairwise?n=100']",
        "max_steps=10",
        "data.eval=['builtin:judged-pairwise?n=20&seed=5']",
        "normalize.data='builtin:judged-sft-mixed?n=64&seed=3'",
        "normalize.max_examples=64",
    )
    norm = summary["normalization"]
    assert norm["gain"] > 0
    scorer = RewardModel.from_pretrained(str(out / "model"))
    prompts = ["Tell me about the red fox.", "Describe the blue owl, please."]
    responses = ["Sure! The red fox is quick and clever. Hope this helps.", "Go away."]
    raw = scorer.score(prompts, responses, normalize=False)
    normalised = scorer.score(prompts, responses)
    assert normalised == pytest.approx([norm["gain"] * r + norm["bias"] for r in raw], rel=1e-5)
    # The plain transformers class scores the same numbers (pad != eos, right padding).
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    hf = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    texts = [render_for_reward(tokenizer, p, r) for p, r in zip(prompts, responses)]
    batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = hf(**batch).logits[:, 0]
    assert logits.tolist() == pytest.approx(raw, abs=1e-4)
    # The normalisation data's completions score mean 0, std 1 after normalisation.
    from preference_data.synthetic import sft_records

    records = sft_records(64, seed=3, quality="mixed")
    scores = torch.tensor(
        scorer.score([[{"role": "user", "content": r["prompt"]}] for r in records], [r["completion"] for r in records])
    )
    assert abs(scores.mean().item()) < 1e-3 and abs(scores.std(unbiased=False).item() - 1) < 1e-3


def test_resume_gives_identical_weights(tmp_path):
    import shutil

    from safetensors.torch import load_file

    common = [
        "data.train=['builtin:judged-pairwise?n=100']",
        "data.eval=['builtin:judged-pairwise?n=10&seed=5']",
        "normalize.data=null",
        "max_steps=6",
        "checkpoint.save_steps=3",
        "checkpoint.keep_last=0",
    ]
    _, full = rm(tmp_path, "tiny", "full", *common)
    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoints" / "step-00000003", resumed / "checkpoints" / "step-00000003")
    rm(tmp_path, "tiny", "resumed", *common, "checkpoint.resume_from=latest")
    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(resumed / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_split_of_the_global_batch_does_not_change_the_update(tmp_path):
    from safetensors.torch import load_file

    common = [
        "data.train=['builtin:judged-ranked?n=40']",
        "data.eval=['builtin:judged-pairwise?n=10&seed=5']",
        "normalize.data=null",
        "max_steps=2",
    ]
    _, a = rm(tmp_path, "tiny_ranked", "8x1", *common, "batch.micro_batch_size=8", "batch.grad_accum=1")
    _, b = rm(tmp_path, "tiny_ranked", "2x4", *common, "batch.micro_batch_size=2", "batch.grad_accum=4")
    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize(
    "config,train,micro",
    [
        ("tiny", "['builtin:judged-pairwise?n=64']", 8),
        ("tiny_ranked", "['builtin:judged-ranked?n=48']", 4),
        ("tiny_rated", "['builtin:judged-rated?n=48']", 4),
    ],
)
def test_shared_prompt_rows_train_as_separate_rows_do(tmp_path, config, train, micro):
    """The same losses and weights with the prompt computed once as with one row per response."""
    from safetensors.torch import load_file

    common = [f"data.train={train}", "max_steps=3", "optim.lr=1e-3", f"batch.micro_batch_size={micro}"]
    common += ["normalize.data=null", "data.eval_fraction=0.1"]
    runs = {}
    for name, extra in {
        "separate": ["data.shared_prompt=false"],
        "shared": ["data.shared_prompt=true", "data.pack=false"],
        "packed": ["data.shared_prompt=true", "data.row_tokens=400"],
    }.items():
        summary, out = rm(tmp_path, config, name, *common, *extra)
        rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in rows if "tokens_computed" in r]
        weights = load_file(str(out / "model" / "model.safetensors"))
        runs[name] = (summary, [r["loss"] for r in steps], steps, weights)
    base_summary, base_losses, base_steps, base_weights = runs["separate"]
    for name in ("shared", "packed"):
        summary, losses, steps, weights = runs[name]
        assert losses == pytest.approx(base_losses, abs=1e-5)
        assert summary["eval_accuracy"] == base_summary["eval_accuracy"]
        for key, value in base_weights.items():
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=0, msg=key)
        # Fewer tokens go through the model: the prompt once per group, and less padding.
        assert sum(r["tokens_computed"] for r in steps) < sum(r["tokens_computed"] for r in base_steps)
        assert all(r["tokens_unshared"] == b["tokens_computed"] for r, b in zip(steps, base_steps))
