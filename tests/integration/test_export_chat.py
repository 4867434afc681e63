"""`rlhf export` and `rlhf chat` on a tiny LoRA SFT run (CPU, seconds)."""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest
import torch
from helpers import REPO, sft_overrides
from safetensors.torch import load_file

from rlhf.cli import chat as chat_cli
from rlhf.cli.main import main as rlhf_main

pytestmark = pytest.mark.usefixtures("one_thread")

MESSAGES = [{"role": "user", "content": "Tell me about the red fox."}]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A 3-step LoRA SFT run that also wrote merged weights (run/model/merged)."""
    run = tmp_path_factory.mktemp("export") / "run"
    rc = rlhf_main(
        [
            "sft",
            "--config",
            str(REPO / "configs/sft/tiny.yaml"),
            *sft_overrides(
                run, "max_steps=3", "model.adapt.strategy=lora", "model.adapt.lora_r=4", "model.adapt.merge=true"
            ),
        ]
    )
    assert rc == 0 and (run / "model" / "adapter_config.json").is_file() and (run / "model" / "merged").is_dir()
    return run


@pytest.fixture
def adapter_only(lora_run, tmp_path):
    """The run's adapter folder without merged/, so that export has to merge it itself."""
    folder = tmp_path / "adapter"
    shutil.copytree(lora_run / "model", folder, ignore=shutil.ignore_patterns("merged"))
    return folder


def export(*argv: str) -> int:
    return rlhf_main(["export", *map(str, argv)])


def logits(model, tokenizer):
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        return model(**ids).logits


def no_leftovers(parent, name):
    return not [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


# ---------------------------------------------------------------------------------------------
# export


def test_exported_adapter_is_merged_and_gives_the_lora_logits(adapter_only, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    assert export(adapter_only, out) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "AutoModelForCausalLM.from_pretrained" in printed

    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (
        tokenizer.chat_template and tokenizer.chat_template == AutoTokenizer.from_pretrained(adapter_only).chat_template
    )

    base_path = json.loads((adapter_only / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    base_logits = logits(base, tokenizer)
    lora = PeftModel.from_pretrained(base, adapter_only).eval()
    expected = logits(lora, tokenizer)
    assert not torch.allclose(base_logits, expected, atol=1e-4)  # the adapter changes the model
    torch.testing.assert_close(logits(merged, tokenizer), expected, rtol=0, atol=1e-5)

    info = json.loads((out / "export.json").read_text())
    assert info["source"] == str(adapter_only.resolve())
    assert info["lora_merged"] is True and info["base_model"] == base_path
    assert info["dtype"] == "float32" and info["model_type"] == "causal_lm" and info["chat_template"] is True
    assert info["parameters"] == sum(p.numel() for p in merged.parameters())
    assert f"{info['parameters']:,}" in printed


def test_run_folder_reuses_merged_weights_and_casts_the_dtype(lora_run, tmp_path):
    out = tmp_path / "bf16"
    assert export(lora_run, out, "--dtype", "bfloat16") == 0
    exported = load_file(str(out / "model.safetensors"))
    trained = load_file(str(lora_run / "model" / "merged" / "model.safetensors"))
    assert exported.keys() == trained.keys()
    for key, tensor in exported.items():
        assert tensor.dtype == torch.bfloat16
        torch.testing.assert_close(tensor, trained[key].to(torch.bfloat16), rtol=0, atol=0, msg=key)
    info = json.loads((out / "export.json").read_text())
    assert info["dtype"] == "bfloat16" and info["lora_merged"] is True
    assert info["model_folder"] == str((lora_run / "model" / "merged").resolve())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_existing_output_is_kept_without_force_and_replaced_with_it(lora_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export(lora_run, out) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"

    assert export(lora_run, out, "--force") == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file() and (out / "export.json").is_file()
    assert no_leftovers(tmp_path, "out")

    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(lora_run, empty) == 0  # an empty folder is not "existing output"


def test_a_failed_write_leaves_nothing_under_the_final_name(lora_run, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("mine")
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export(lora_run, tmp_path / "new")
    with pytest.raises(RuntimeError, match="disk full"):
        export(lora_run, old, "--force")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in old.iterdir()] == ["keep.txt"]
    assert no_leftovers(tmp_path, "new") and no_leftovers(tmp_path, "old")


def test_bad_paths_exit_2_and_name_the_path(lora_run, adapter_only, tmp_path, capsys):
    def error(*argv) -> str:
        assert export(*argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("rlhf export: ") and len(err.splitlines()) == 1
        return err

    missing = tmp_path / "no-such-run"
    err = error(missing, tmp_path / "a")
    assert str(missing) in err and "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = error(empty, tmp_path / "b")
    assert str(empty) in err and "adapter_config.json" in err
    (empty / "config.json").write_text("{}")
    assert "no weights" in error(empty, tmp_path / "c")

    config = json.loads((adapter_only / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter_only / "adapter_config.json").write_text(json.dumps(config))
    assert str(tmp_path / "gone") in error(adapter_only, tmp_path / "d")

    # --force must not delete the model it exports.
    assert "source model" in error(lora_run / "model", lora_run, "--force")
    assert (lora_run / "model" / "adapter_config.json").is_file()
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_reward_model_exports_with_its_normalisation_and_scores_the_same(
    tiny_model_path, tiny_tokenizer, tmp_path, capsys
):
    from reward_models.model import load_reward_model, save_reward_model
    from reward_models.normalization import save_normalization
    from reward_models.scorer import RewardModel
    from rlhf.config.sections import ModelConfig

    torch.manual_seed(0)
    model = load_reward_model(ModelConfig(name_or_path=tiny_model_path), pad_token_id=tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        model.head.weight.normal_()  # a head that scores texts apart
    source = save_reward_model(model, tiny_tokenizer, tmp_path / "rm", extra={"chat_template": True})
    save_normalization(source, {"gain": 2.0, "bias": -1.0})

    out = tmp_path / "out"
    assert export(source, out) == 0
    assert "RewardModel.from_pretrained" in capsys.readouterr().out
    assert json.loads((out / "export.json").read_text())["model_type"] == "reward_model"
    prompts, responses = ["What is the capital of France?", "Count to three."], ["Paris.", "1 2 3"]
    expected = RewardModel.from_pretrained(source, device="cpu").score(prompts, responses)
    assert RewardModel.from_pretrained(out, device="cpu").score(prompts, responses) == pytest.approx(expected, abs=1e-5)
    assert json.loads((out / "normalization.json").read_text())["gain"] == 2.0

    assert chat_cli.main([str(source)]) == 2
    assert "reward model" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# chat


@pytest.fixture
def spy(monkeypatch):
    """Records the conversation handed to generation on every turn (generation itself is real)."""
    calls = []
    real = chat_cli.sample

    def recording(model, tokenizer, prompts, *args, **kwargs):
        calls.append([dict(m) for m in prompts[0]])
        return real(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(chat_cli, "sample", recording)
    return calls


def run_chat(monkeypatch, capsys, model_dir, text, *argv):
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    capsys.readouterr()
    rc = rlhf_main(["chat", str(model_dir), "--temperature", "0", "--max-new-tokens", "8", *argv])
    captured = capsys.readouterr()
    replies = [line[len(chat_cli.REPLY) :] for line in captured.out.splitlines() if line.startswith(chat_cli.REPLY)]
    return rc, replies, captured


def test_chat_keeps_history_and_reset_clears_it(lora_run, monkeypatch, capsys, spy):
    rc, replies, captured = run_chat(
        monkeypatch, capsys, lora_run, "hello\n/reset\nhi\n/exit\nnot read\n", "--system", "Be brief."
    )
    assert rc == 0 and len(replies) == 2 and "(conversation reset)" in captured.out
    system = {"role": "system", "content": "Be brief."}
    assert spy == [[system, {"role": "user", "content": "hello"}], [system, {"role": "user", "content": "hi"}]]

    spy.clear()
    rc, replies, _ = run_chat(monkeypatch, capsys, lora_run, "hello\n\nhi\n")  # ends at end of input
    assert rc == 0 and len(replies) == 2
    assert spy[1] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": "hi"},
    ]


def test_chat_on_the_adapter_replies_as_the_export(adapter_only, tmp_path, monkeypatch, capsys):
    assert export(adapter_only, tmp_path / "out") == 0
    text = "Tell me about the red fox.\nAnd the owl?\n"
    rc, from_adapter, _ = run_chat(monkeypatch, capsys, adapter_only, text)
    rc2, from_export, _ = run_chat(monkeypatch, capsys, tmp_path / "out", text)
    assert rc == rc2 == 0 and len(from_adapter) == 2 and from_adapter == from_export


def test_chat_bad_input_exits_2(tmp_path, monkeypatch, capsys, lora_run):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    assert chat_cli.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "missing") in err and "does not exist" in err
    with pytest.raises(SystemExit) as exit_info:
        chat_cli.main([str(lora_run), "--top-p", "0"])
    assert exit_info.value.code == 2
    assert chat_cli.main([str(lora_run), "--max-new-tokens", "100000"]) == 2
    assert "positions" in capsys.readouterr().err


CUSTOM_CODE = """
from pathlib import Path

Path({marker!r}).write_text("custom code ran")

from transformers import LlamaConfig, LlamaForCausalLM


class MarkerConfig(LlamaConfig):
    model_type = "marker_lm"


class MarkerForCausalLM(LlamaForCausalLM):
    config_class = MarkerConfig
"""


@pytest.fixture
def custom_code_model(tiny_model_path, tmp_path, monkeypatch):
    """builtin:tiny's weights behind a config whose auto_map points at marker.py in the folder;
    importing marker.py writes the returned marker file."""
    import transformers.dynamic_module_utils as dynamic_modules

    # transformers copies custom code to its modules cache and imports it from there.
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder, marker = tmp_path / "custom_lm", tmp_path / "marker.txt"
    shutil.copytree(tiny_model_path, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="marker_lm",
        architectures=["MarkerForCausalLM"],
        auto_map={"AutoConfig": "marker.MarkerConfig", "AutoModelForCausalLM": "marker.MarkerForCausalLM"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "marker.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    return folder, marker


def test_chat_runs_custom_code_only_with_the_flag(custom_code_model, tiny_model_path, monkeypatch, capsys):
    folder, marker = custom_code_model
    # "y" on stdin is the answer transformers' own prompt would take; nothing may ask for it.
    rc, replies, captured = run_chat(monkeypatch, capsys, folder, "y\n")
    assert not marker.exists()
    assert rc == 2 and replies == [] and "Traceback" not in captured.err
    assert "--trust-remote-code" in captured.err and str(folder / "config.json") in captured.err

    text = "Tell me about the red fox.\n"
    rc, replies, _ = run_chat(monkeypatch, capsys, folder, text, "--trust-remote-code")
    assert rc == 0 and marker.read_text() == "custom code ran"
    # The custom class is a Llama subclass over the same weights: the same greedy reply.
    rc_plain, plain, _ = run_chat(monkeypatch, capsys, tiny_model_path, text)
    assert rc_plain == 0 and len(replies) == 1 and replies == plain
