"""Helpers shared by the tests (importable because tests/ is on sys.path via conftest)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sft_overrides(output_dir: Path, *extra: str) -> list[str]:
    """A fast tiny SFT run: no progress bar, no wandb, few steps."""
    return [
        f"output_dir={output_dir}",
        "tracking.mode=disabled",
        "tracking.progress=false",
        "max_steps=6",
        "eval_steps=0",
        "data.train=['builtin:judged-sft?n=200']",
        "data.max_length=96",
        *extra,
    ]


# The tiny pipeline preset shortened to seconds a stage (keys of configs/pipeline/tiny.yaml).
PIPELINE_SHORT = [
    "tracking_mode=disabled",
    "sft.tracking.progress=false",
    "rm.tracking.progress=false",
    "ppo.tracking.progress=false",
    "dpo.tracking.progress=false",
    "sft.max_steps=40",
    "sft.eval_steps=0",
    "sft.data.train=['builtin:judged-sft-mixed?n=400']",
    "rm.max_steps=30",
    "rm.eval_steps=0",
    "rm.data.train=['builtin:judged-pairwise?n=300']",
    "rm.data.eval=['builtin:judged-pairwise?n=40&seed=99']",
    "rm.normalize.data='builtin:judged-sft-mixed?n=40&seed=7'",
    "ppo.max_steps=3",
    "ppo.rollout.batch_size=16",
    "ppo.rollout.max_new_tokens=12",
    "ppo.data.prompts=['builtin:judged-prompts?n=100']",
    "ppo.ppo.epochs=1",
    "dpo.max_steps=10",
    "dpo.eval_steps=0",
    "dpo.data.train=['builtin:judged-pairwise?n=200']",
    "dpo.data.eval=['builtin:judged-pairwise?n=20&seed=99']",
    "eval.prompts='builtin:judged-prompts?n=12&seed=4242'",
    "eval.seeds=[0,1]",
    "eval.max_new_tokens=12",
]


def launch_command(config_file: str | None, num_processes: int, port: int) -> list[str]:
    """`accelerate launch` arguments that really give N CPU processes (see docs/distributed.md)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is None:
        cmd += [
            "--multi_gpu",
            "--num_processes",
            str(num_processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
    else:
        cmd += ["--config_file", config_file, "--num_processes", str(num_processes)]
    return cmd + ["--main_process_port", str(port), str(REPO / "scripts" / "train.py")]


def launch(engine: str, port: int, args: list[str], num_processes: int = 2):
    """Runs ``scripts/train.py <args>`` on ``num_processes`` CPU processes under ``engine`` ('ddp'
    over gloo, or the name of a configs/accelerate/ file such as 'zero3'); returns the result
    after checking the exit code (the output tails are in the assertion message)."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
    env["OMP_NUM_THREADS"] = "1"
    config = None
    if engine == "ddp":
        env["ACCELERATE_USE_CPU"] = "1"
    else:
        config = str(REPO / f"configs/accelerate/{engine}.yaml")
    cmd = launch_command(config, num_processes, port) + list(args)
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def constant_reward(prompt, response) -> float:
    """A reward function for tests (given as `helpers:constant_reward`)."""
    return 7.0


def answer_length(prompt, response, record) -> float:
    """A reward function that reads the prompt record (given as `helpers:answer_length`): the
    length of its metadata.answer, whatever the response."""
    return float(len(record.metadata["answer"]))


def load_tiny_lm():
    """builtin:tiny as a float32 causal LM in eval mode."""
    import torch

    from rlhf.config.sections import ModelConfig
    from rlhf.models.loading import load_causal_lm

    return load_causal_lm(ModelConfig(name_or_path="builtin:tiny"), dtype=torch.float32).eval()


def point_eos_along_mean_hidden(model, tokenizer, prompts, scale: float = 1.0):
    """Sets the EOS row of lm_head to ``scale`` x the unit mean final hidden state of ``prompts``,
    so a randomly initialised model ends some responses early and lets others run on."""
    import torch

    from rlhf.rollout.sampling import render_prompt

    enc = tokenizer(
        [render_prompt(tokenizer, p) for p in prompts], add_special_tokens=False, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
        direction = hidden[enc["attention_mask"].bool()].mean(0)
        model.lm_head.weight[tokenizer.eos_token_id] = scale * direction / direction.norm()
    return model


def plain_response_logprobs(model, samples, temperature: float) -> list:
    """Per row of ``samples``: the log-probs of its valid response tokens from one unpadded
    forward pass (an implementation independent of rlhf.rollout.sampling's batched one)."""
    import torch

    out = []
    P = samples.prompt_length
    for row in range(samples.input_ids.shape[0]):
        prompt = samples.input_ids[row, :P][samples.attention_mask[row, :P].bool()]
        response = samples.response_ids[row][samples.response_mask[row].bool()]
        with torch.no_grad():
            logits = model(input_ids=torch.cat([prompt, response]).unsqueeze(0)).logits[0].float()
        logps = torch.log_softmax(logits / temperature, dim=-1)
        out.append(torch.stack([logps[len(prompt) - 1 + j, tok] for j, tok in enumerate(response.tolist())]))
    return out


def tiny_untied_llama():
    """A 3-block Llama (vocab 50, hidden 16, grouped-query attention, untied head) from a config."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=24,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


class SpyTokenizer:
    """Delegates to a tokenizer and records the length of every text it is asked to encode."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.lengths: list[int] = []

    def __call__(self, text, **kwargs):
        self.lengths.append(len(text))
        return self._tokenizer(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)
