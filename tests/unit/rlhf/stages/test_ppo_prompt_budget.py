"""PPO's prompt length check tokenises a bounded piece of each prompt, so one huge prompt costs
memory in proportion to data.max_prompt_length, and is still rejected with its reason."""

from __future__ import annotations

import json
from types import SimpleNamespace

from helpers import SpyTokenizer

from preference_data.text_budget import char_budget
from rlhf.config.loader import load_config
from rlhf.stages.ppo_config import PPOConfig
from rlhf.stages.ppo_rollout import load_prompts


def test_long_prompt_is_rejected_without_tokenising_it_whole(tmp_path, tiny_tokenizer):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "short one"}) + "\n" + json.dumps({"prompt": "long " * 150_000}) + "\n")
    cfg = load_config(PPOConfig, None, [f"output_dir={tmp_path / 'run'}", f"data.prompts=[{path}]"])
    spy = SpyTokenizer(tiny_tokenizer)
    prompts, report = load_prompts(cfg, spy, SimpleNamespace(is_main=False))
    assert [record.prompt for record in prompts] == ["short one"]
    assert (report.accepted, report.rejected) == (1, 1) and report.reasons == {"too long": 1}
    assert max(spy.lengths) <= char_budget(cfg.data.max_prompt_length)
