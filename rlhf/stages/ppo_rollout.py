"""PPO's rollout: the prompts, and one step's samples with their scores and the log-probs,
values and reference log-probs the update compares against (steps 1 and 2 of the loop in
``rlhf.stages.ppo``), all computed once without grad.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from preference_data.text_budget import char_budget
from preference_data.validate_preferences import load_kind
from rlhf.math.advantages import masked_moments, moments_to_stats, whiten
from rlhf.math.ops import token_logprobs
from rlhf.math.seeds import derive_seed
from rlhf.rollout.actor_critic import forward_samples, reference_logprobs
from rlhf.rollout.sampling import concat_samples, render_prompt, sample


def load_prompts(cfg, tokenizer, backend) -> tuple[list, object]:
    """The prompt records that fit ``data.max_prompt_length`` (with their metadata, for the reward
    functions that take the record), and the data report."""
    quarantine = str(Path(cfg.output_dir) / "quarantine.jsonl") if backend.is_main else None
    records, report = load_kind(
        list(cfg.data.prompts),
        "prompt",
        field_map=cfg.data.field_map or None,
        quarantine_path=quarantine,
        strict=cfg.data.strict,
        adapter=cfg.data.adapter,
        max_record_bytes=cfg.data.max_record_bytes or None,
    )
    prompts = []
    limit = cfg.data.max_prompt_length
    budget = char_budget(limit)  # a longer prompt is cut first: its count is exact up to the limit
    for record in records:
        text = render_prompt(tokenizer, record.prompt, cfg.data.chat_template)
        length = len(tokenizer(text[:budget], add_special_tokens=False)["input_ids"])
        if length > limit:
            size = f"more than {limit}" if len(text) > budget else str(length)
            report.reject_accepted(record, f"prompt is {size} tokens, longer than data.max_prompt_length={limit}")
        else:
            prompts.append(record)
    report.quarantine.close()
    if not prompts:
        raise ValueError(f"no prompt left\n{report.summary()}")
    return prompts, report


def global_whiten(values, mask, backend, shift_mean: bool = True):
    """``whiten`` with the mean and variance over the valid entries of every process's batch."""
    moments = backend.all_reduce_sum(masked_moments(values, mask))
    return whiten(values, mask, shift_mean, stats=moments_to_stats(moments))


def shape_scores(cfg, scores: torch.Tensor, ended: torch.Tensor, backend) -> tuple[torch.Tensor, torch.Tensor]:
    """(logged, used) scores [B]: the missing-EOS score and the clip applied to both; ``used``
    then scaled to unit variance over all processes when ``reward.whiten``, keeping its mean
    (the mean score is the signal; advantages, not rewards, are centred)."""
    if cfg.rollout.missing_eos_score is not None:
        scores = torch.where(ended, scores, torch.full_like(scores, cfg.rollout.missing_eos_score))
    if cfg.reward.clip is not None:
        scores = scores.clamp(-cfg.reward.clip, cfg.reward.clip)
    if not cfg.reward.whiten:
        return scores, scores
    return scores, global_whiten(scores, torch.ones_like(scores), backend, shift_mean=False)


@dataclass
class Rollout:
    """One step's samples with everything the update needs, computed once without grad."""

    prompts: list  # [B] each sample's prompt (a prompt's group_size samples in a row)
    samples: Any
    group_ids: torch.Tensor  # [B] each sample's prompt: its index in the step's global batch
    mask: torch.Tensor  # [B, T] float, valid response tokens
    raw_scores: torch.Tensor  # [B] before whitening (what is logged)
    scores: torch.Tensor  # [B] as added to the rewards
    old_logps: torch.Tensor  # [B, T]
    old_values: torch.Tensor  # [B, T]
    ref_logps: torch.Tensor  # [B, T]
    seconds: float
    source_scores: dict[str, torch.Tensor]  # [B] each reward source's own scores, by source name


def sample_and_score(r, step: int) -> Rollout:
    """Samples of this process's slice of the step's prompts (``r``: the PPO run's state)."""
    cfg, backend, model = r.cfg, r.backend, r.model
    start = time.time()
    # Each process samples its slice; each generation chunk has its own seed, a function of its
    # position in the global batch, so that the samples (and the whole run) do not depend on how
    # many processes share the batch.
    # A process takes whole prompts and samples each group_size times; with group size 1 this
    # is one sample per prompt.
    group = cfg.rollout.group_size
    first_prompt = backend.rank * (r.per_process // group)
    records = [p for p in next(r.batches)[first_prompt : first_prompt + r.per_process // group] for _ in range(group)]
    prompts = [record.prompt for record in records]
    group_ids = torch.arange(first_prompt, first_prompt + r.per_process // group).repeat_interleave(group)
    offset = backend.rank * r.per_process
    chunk_size = cfg.rollout.generation_batch_size
    model.eval()
    with backend.generation_model(model) as unwrapped:
        parts = [
            sample(
                unwrapped.policy,
                r.tokenizer,
                prompts[i : i + chunk_size],
                r.sampling,
                chat_template=cfg.data.chat_template,
                generator_seed=derive_seed(cfg.seed, step, offset + i),
            )
            for i in range(0, r.per_process, chunk_size)
        ]
    samples = concat_samples(parts, r.tokenizer.pad_token_id)

    by_source = r.scorer.score_by_source(prompts, samples.texts, records)
    raw_scores, scores = shape_scores(cfg, r.scorer.combine(by_source).to(backend.device), samples.ended, backend)
    old_logps, old_values, ref_logps = [], [], []
    temperature, micro = cfg.rollout.temperature, cfg.batch.micro_batch_size
    with torch.no_grad():
        for i in range(0, r.per_process, micro):
            chunk = samples.subset(list(range(i, min(i + micro, r.per_process))))
            logits, values = forward_samples(model, chunk, temperature, with_values=cfg.has_critic)
            old_logps.append(token_logprobs(logits, chunk.response_ids) * chunk.response_mask)
            old_values.append(
                values.float() * chunk.response_mask
                if values is not None
                else torch.zeros_like(chunk.response_mask, dtype=torch.float32)
            )
            ref_logps.append(
                reference_logprobs(model, r.reference, chunk, temperature, backend.unwrap, backend.autocast)
            )
    return Rollout(
        prompts,
        samples,
        group_ids.to(backend.device),
        samples.response_mask.float(),
        raw_scores,
        scores,
        torch.cat(old_logps),
        torch.cat(old_values),
        torch.cat(ref_logps),
        time.time() - start,
        by_source,
    )
