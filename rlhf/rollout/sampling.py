"""Sampling from a policy: batched generation with left padding, cut after the first EOS.

`sample` is the one place generation happens (PPO rollouts, evaluation, annotation tasks), so a
faster generator can replace it without touching the loops. It returns token ids, not only
text, so log-probs are computed on exactly the tokens that were sampled (decoding and
re-tokenising can change them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlhf.math.ops import token_logprobs


def render_prompt(tokenizer, prompt, chat_template: bool = True) -> str:
    """The text a policy continues: the conversation with the assistant's generation prompt."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(m["content"] for m in messages)


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    do_sample: bool = True


@dataclass
class Samples:
    """A batch of prompts (left-padded) followed by their sampled responses (right-padded).

    input_ids:      [B, P + R] prompt then response tokens; pad outside the real tokens.
    attention_mask: [B, P + R] 1 at real prompt tokens and valid response tokens.
    response_mask:  [B, R] 1 at the response tokens that count: up to and including the first EOS.
    ended:          [B] whether the response produced an EOS within max_new_tokens.
    texts:          B decoded responses, without the EOS.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    ended: torch.Tensor
    texts: list[str]

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length :]

    def subset(self, index: torch.Tensor | list[int]) -> Samples:
        index = torch.as_tensor(index, dtype=torch.long)
        return Samples(
            self.input_ids[index],
            self.attention_mask[index],
            self.response_mask[index],
            self.ended[index],
            [self.texts[i] for i in index.tolist()],
        )


def concat_samples(parts: list[Samples], pad_id: int) -> Samples:
    """One batch from several: prompts left-padded and responses right-padded to the longest."""
    prompt_len = max(p.prompt_length for p in parts)
    response_len = max(p.response_mask.shape[1] for p in parts)

    def pad(t: torch.Tensor, left: int, right: int, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (left, right), value=value)

    ids, attn, resp = [], [], []
    for p in parts:
        left, right = prompt_len - p.prompt_length, response_len - p.response_mask.shape[1]
        ids.append(pad(p.input_ids, left, right, pad_id))
        attn.append(pad(p.attention_mask, left, right, 0))
        resp.append(pad(p.response_mask, 0, right, 0))
    return Samples(
        torch.cat(ids),
        torch.cat(attn),
        torch.cat(resp),
        torch.cat([p.ended for p in parts]),
        [t for p in parts for t in p.texts],
    )


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def truncate_after_eos(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, ended): mask is 1 up to and including each row's first EOS (all of a row without one).

    Args:
        response_ids: [B, R] generated tokens.
    Returns:
        mask [B, R] long, ended [B] bool.
    """
    is_eos = response_ids == eos_id
    ended = is_eos.any(-1)
    # Replaces a per-row scan for the first EOS: tokens strictly after it have a positive
    # count of earlier EOS tokens.
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()
    return (eos_before == 0).long(), ended


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: Sequence,
    sampling: SamplingConfig,
    *,
    chat_template: bool = True,
    generator_seed: int | None = None,
) -> Samples:
    """Sample one response per prompt from `model` (left padding, stop at EOS).

    Args:
        prompts: strings (one user turn) or message lists.
        generator_seed: seeds torch's RNG just before generating, for reproducible rollouts.
    """
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues every row from its last real token
    try:
        texts = [render_prompt(tokenizer, p, chat_template) for p in prompts]
        device = next(model.parameters()).device
        batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(device)
        if generator_seed is not None:
            torch.manual_seed(generator_seed)
        sampled = sampling.do_sample and sampling.temperature > 0
        generated = model.generate(
            **batch,
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sampled,
            temperature=sampling.temperature if sampled else None,
            top_k=sampling.top_k if sampled else None,
            top_p=sampling.top_p if sampled else None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            use_cache=True,  # a model saved after training with checkpointing says False
        )
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    prompt_length = batch["input_ids"].shape[1]
    response = generated[:, prompt_length:]
    response_mask, ended = truncate_after_eos(response, tokenizer.eos_token_id)
    response = torch.where(response_mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    decoded = []
    for row, keep, done in zip(response.tolist(), response_mask.sum(-1).tolist(), ended.tolist()):
        row = row[: keep - 1] if done else row[:keep]  # drop the EOS itself
        decoded.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return Samples(
        input_ids=torch.cat([batch["input_ids"], response], dim=1),
        attention_mask=torch.cat([batch["attention_mask"], response_mask.to(batch["attention_mask"].dtype)], dim=1),
        response_mask=response_mask,
        ended=ended,
        texts=decoded,
    )


def response_logits(model, samples: Samples, temperature: float = 1.0) -> torch.Tensor:
    """Logits [B, R, V] that predict each response token, divided by the sampling temperature."""
    out = model(
        input_ids=samples.input_ids,
        attention_mask=samples.attention_mask,
        position_ids=position_ids(samples.attention_mask),
        use_cache=False,
    )
    # The logit at position t predicts token t + 1, so the response's predictors start one early.
    logits = out.logits[:, samples.prompt_length - 1 : -1]
    return logits.float() / temperature if temperature != 1.0 else logits


def response_logprobs(model, samples: Samples, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs [B, R] of the sampled response tokens under `model` (0 outside the response mask)."""
    logits = response_logits(model, samples, temperature)
    return token_logprobs(logits, samples.response_ids) * samples.response_mask
