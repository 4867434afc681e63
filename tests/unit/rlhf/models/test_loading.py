"""rlhf.models.loading: model names and folders, tokenizers and their pad token, saved models."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_untied_llama

from rlhf.config.sections import AdaptConfig, ModelConfig
from rlhf.models.adapt import apply_adaptation
from rlhf.models.loading import (
    check_model_path,
    load_causal_lm,
    load_tokenizer,
    looks_like_local_path,
    resolve_model_path,
)


def test_unknown_builtin_lists_the_builtins(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"builtin:tiny.*builtin:smollm2-135m-instruct"):
        resolve_model_path("builtin:gpt5")
    assert not (tmp_path / "builtin").exists()


def test_non_builtin_names_pass_through_unchanged():
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path("/some/local/folder") == "/some/local/folder"


# ---------------------------------------------------------------------------------------------
# local folders vs Hub names


@pytest.mark.parametrize(
    "name, local",
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", False),  # owner/name with no such local folder: the Hub
        ("gpt2", False),
        ("builtin:tiny", False),
        ("runs/sft-tiny/model", True),  # more than one '/'
        ("runs/model", True),  # one '/', and runs/ exists here
        ("/abs/model", True),
        ("./model", True),
        ("../model", True),
        ("~/model", True),
        ("models\\sft", True),
    ],
)
def test_local_path_rule(tmp_path, monkeypatch, name, local):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert looks_like_local_path(name) is local


def test_missing_local_folder_names_the_key_the_path_and_the_likely_cause(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = ModelConfig(name_or_path="runs/sft-tiny/model")
    for load in (load_tokenizer, load_causal_lm):
        # Without the check transformers says "Repo id must be in the form 'repo_name' or ...".
        with pytest.raises(
            FileNotFoundError,
            match=r"^model\.name_or_path: model folder runs/sft-tiny/model does "
            r"not exist \(is it the output of a stage that has not run yet\?\)",
        ):
            load(cfg)
    with pytest.raises(FileNotFoundError, match=r"critic\.init_from: model folder \./gone does not exist"):
        check_model_path("./gone", "critic.init_from")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"model\.name_or_path: \./weights\.bin is a file"):
        check_model_path("./weights.bin")
    check_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")  # a Hub name is left to from_pretrained
    check_model_path(str(tmp_path))


def test_missing_reward_model_folders_say_so(tmp_path):
    from reward_models.model import load_reward_model
    from reward_models.scorer import RewardModel

    missing = tmp_path / "rm-tiny" / "model"
    with pytest.raises(
        FileNotFoundError,
        match=rf"model\.name_or_path: model folder {missing} does not exist "
        r"\(is it the output of a stage that has not run yet\?\)",
    ):
        load_reward_model(ModelConfig(name_or_path=str(missing)), pad_token_id=0)
    with pytest.raises(
        FileNotFoundError,
        match=rf"reward model folder {missing} does not exist \(is it the output "
        r"of a stage that has not run yet\?\)",
    ):
        RewardModel.from_pretrained(missing)


def test_home_folder_is_expanded():
    assert resolve_model_path("~/models/x") == str(Path.home() / "models" / "x")


def test_tokenizer_that_pads_with_eos_and_has_no_spare_token_warns(tmp_path, caplog):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "<eos>": 2}))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>").save_pretrained(tmp_path)
    with caplog.at_level("WARNING", logger="rlhf.models.loading"):
        tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tmp_path)))
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>"  # no other token to pad with
    assert "pads with its EOS token '<eos>'" in caplog.text and "masked by position" in caplog.text


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_saved_models_generate_with_the_kv_cache_even_after_checkpointed_training(tmp_path, strategy):
    from transformers import AutoConfig

    from rlhf.models.loading import save_model

    model = apply_adaptation(tiny_untied_llama(), AdaptConfig(strategy=strategy, lora_r=2))
    config = model.get_base_model().config if strategy == "lora" else model.config
    config.use_cache = False  # as SFT leaves it
    save_model(model, None, tmp_path / "model", merge=True)
    saved = tmp_path / "model" / ("merged" if strategy == "lora" else "")
    assert AutoConfig.from_pretrained(saved).use_cache is True
    assert config.use_cache is False  # the model in training keeps its setting
