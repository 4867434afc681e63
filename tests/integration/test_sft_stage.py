"""The SFT stage end to end on builtin:tiny (CPU, seconds per run)."""

import json
import shutil

import pytest
import torch
from helpers import sft_overrides
from safetensors.torch import load_file

from rlhf.config.loader import load_config
from rlhf.stages.sft import SFTConfig, run


def sft(tmp_path, name, *extra):
    cfg = load_config(SFTConfig, "configs/sft/tiny.yaml", sft_overrides(tmp_path / name, *extra))
    return run(cfg), tmp_path / name


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0 if atol == 0 else 1e-4, msg=key)


def test_loss_falls_and_outputs_are_complete(tmp_path):
    summary, out = sft(tmp_path, "run", "max_steps=30", "optim.lr=3e-3", "eval_steps=15")
    losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in losses if "loss" in r]
    assert len(train) == 30
    assert train[-1] < 0.6 * train[0]
    for key in ("lr", "grad_norm", "tokens_per_s"):
        assert key in losses[0]
    assert summary["eval_loss"] < train[0]
    assert summary["eval_perplexity"] == pytest.approx(torch.tensor(summary["eval_loss"]).exp().item(), rel=1e-6)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["world_size"] == 1 and saved["distributed_type"] == "NO"
    assert (out / "curves.png").stat().st_size > 1000
    assert "max_steps: 30" in (out / "config.yaml").read_text()


def test_output_reloads_with_transformers_and_matches(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = sft(tmp_path, "run", "max_steps=3")
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me about the red fox."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > ids["input_ids"].shape[1]
    # The reloaded weights are the trained ones, not the initial ones.
    from rlhf.models.loading import resolve_model_path

    initial = load_file(
        str(next(p for p in __import__("pathlib").Path(resolve_model_path("builtin:tiny")).glob("*.safetensors")))
    )
    trained = weights(out)
    assert any(not torch.equal(initial[k], trained[k]) for k in trained)


def test_resume_from_mid_run_checkpoint_gives_identical_weights(tmp_path):
    _, full = sft(tmp_path, "full", "max_steps=6", "checkpoint.save_steps=3", "checkpoint.keep_last=0")
    assert (full / "checkpoints" / "step-00000003" / "trainer_state.json").is_file()
    # A second run that only has the mid-run checkpoint (as after a crash at step 4 or 5),
    # plus a half-written later one that must be ignored.
    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoints" / "step-00000003", resumed / "checkpoints" / "step-00000003")
    (resumed / "checkpoints" / ".tmp-step-00000005").mkdir()
    summary, _ = sft(tmp_path, "resumed", "max_steps=6", "checkpoint.resume_from=latest")
    assert summary["steps"] == 6
    assert_same_weights(weights(full), weights(resumed))
    logged = [json.loads(ln)["step"] for ln in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert logged[0] == 4


@pytest.mark.parametrize("micro,accum", [(1, 8), (4, 2)])
def test_micro_batch_split_does_not_change_the_update(tmp_path, micro, accum):
    _, base = sft(tmp_path, "8x1", "max_steps=3", "batch.micro_batch_size=8", "batch.grad_accum=1")
    _, split = sft(
        tmp_path, f"{micro}x{accum}", "max_steps=3", f"batch.micro_batch_size={micro}", f"batch.grad_accum={accum}"
    )
    assert_same_weights(weights(base), weights(split), atol=2e-6)


def test_bad_records_are_quarantined_and_counted(tmp_path):
    data = tmp_path / "mixed.jsonl"
    long_completion = "fox " * 400
    lines = [
        json.dumps({"prompt": "Tell me about the red fox.", "completion": "Sure! The red fox is quick."}),
        json.dumps({"prompt": "Tell me about the owl."}),
        json.dumps({"prompt": "Tell me about the cat.", "completion": "   "}),
        "{not json",
        json.dumps({"prompt": "x " * 200, "completion": long_completion}),
    ] + [json.dumps({"prompt": f"Tell me about fox {i}.", "completion": "Sure! It is quick."}) for i in range(20)]
    data.write_text("\n".join(lines) + "\n")
    summary, out = sft(
        tmp_path,
        "run",
        f"data.train=[{data}]",
        "max_steps=2",
        "data.eval_fraction=0",
        "data.max_length=64",
        "data.truncation=reject",
    )
    report = summary["data"]
    assert (report["read"], report["accepted"], report["rejected"]) == (25, 21, 4)
    quarantined = [json.loads(ln) for ln in (out / "quarantine.jsonl").read_text().splitlines()]
    by_line = {q["line"]: q["reason"] for q in quarantined}
    assert set(by_line) == {2, 3, 4, 5}
    assert "completion" in by_line[2] and "missing" in by_line[2]
    assert "empty" in by_line[3]
    assert "JSON" in by_line[4]
    assert "too long" in by_line[5]
    assert all(q["source"] == str(data) for q in quarantined)


def test_nothing_valid_fails_with_the_reasons(tmp_path):
    from preference_data.validate import DataError

    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "only a prompt"}) + "\n")
    with pytest.raises(DataError, match="field 'completion' is missing"):
        sft(tmp_path, "run", f"data.train=[{data}]", "data.strict=true")
    with pytest.raises(DataError, match="no valid"):
        sft(tmp_path, "run2", f"data.train=[{data}]")


def test_weighted_mixture_and_packing_run(tmp_path):
    summary, out = sft(
        tmp_path,
        "mix",
        "data.train=['builtin:judged-sft?n=100','builtin:judged-sft-mixed?n=100']",
        "data.weights=[3,1]",
        "data.packing=true",
        "data.max_length=256",
        "max_steps=3",
    )
    assert summary["steps"] == 3 and summary["final_loss"] > 0
    assert summary["data"]["read"] == 200


def test_gradient_checkpointing_gives_the_same_update(tmp_path):
    _, plain = sft(tmp_path, "plain", "max_steps=2")
    _, ckpt = sft(tmp_path, "ckpt", "max_steps=2", "model.gradient_checkpointing=true")
    assert_same_weights(weights(plain), weights(ckpt), atol=2e-6)


@pytest.mark.parametrize("strategy", ["lora", "freeze", "prefix"])
def test_adaptation_strategies_train_only_their_parameters(tmp_path, strategy):
    summary, out = sft(
        tmp_path,
        strategy,
        "max_steps=2",
        f"model.adapt.strategy={strategy}",
        "model.adapt.lora_r=4",
        "model.adapt.num_virtual_tokens=4",
    )
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    assert (out / "model").is_dir() and summary["final_loss"] > 0
