"""Sampling from a policy: batched generation with left padding, cut after the first end token.

`sample` is the one place generation happens (PPO rollouts, evaluation, annotation tasks), so a
faster generator can replace it without touching the loops. It returns token ids, not only
text, so log-probs are computed on exactly the tokens that were sampled (decoding and
re-tokenising can change them). It samples from ``softmax(logits / temperature)`` (restricted by
the ``SamplingConfig``'s own top-k / top-p only), whatever the model's ``generation_config`` asks
for: PPO's ratio and KL take the log-probs of that distribution, so it must be the one sampled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
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
    response_mask:  [B, R] 1 at the response tokens that count: up to and including the first
                    end token (EOS, or any other id of ``end_token_ids``).
    ended:          [B] whether the response produced an end token within max_new_tokens.
    texts:          B decoded responses, without the end token.
    nonfinite_logits: generation steps at which some row's logits were NaN or infinite (those
                    rows were then drawn from a uniform distribution so generation could end on
                    every process; a run must not train on such samples).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    ended: torch.Tensor
    texts: list[str]
    nonfinite_logits: int = 0

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
            self.nonfinite_logits,
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
        sum(p.nonfinite_logits for p in parts),
    )


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def truncate_after_eos(response_ids: torch.Tensor, eos_id: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, ended): mask is 1 up to and including each row's first end token (all of a row
    without one).

    Args:
        response_ids: [B, R] generated tokens.
        eos_id: the end token id, or several (any of them ends a response).
    Returns:
        mask [B, R] long, ended [B] bool.
    """
    ends = torch.as_tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), device=response_ids.device)
    is_eos = torch.isin(response_ids, ends)
    ended = is_eos.any(-1)
    # Replaces a per-row scan for the first EOS: tokens strictly after it have a positive
    # count of earlier EOS tokens.
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()
    return (eos_before == 0).long(), ended


def end_token_ids(model, tokenizer) -> list[int]:
    """The ids that end a response: the tokenizer's EOS and those of the model's
    ``generation_config`` (an int or a list; e.g. a chat model's end-of-turn and end-of-text)."""
    ids: list[int] = []
    config = getattr(model, "generation_config", None)
    for source in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        for token in [] if source is None else [source] if isinstance(source, int) else list(source):
            if int(token) not in ids:
                ids.append(int(token))
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation_config names an EOS token")
    return ids


def _plain_generation_config(model, tokenizer, sampling: SamplingConfig, end_ids: list[int]):
    """Only what ``sampling`` asks for; every other logits processor off."""
    from transformers import GenerationConfig

    sampled = sampling.do_sample and sampling.temperature > 0
    return GenerationConfig(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=sampled,
        temperature=sampling.temperature if sampled else None,
        # Explicit, because transformers fills an unset top_k with 50; 0 turns it off.
        top_k=sampling.top_k if sampled else None,
        top_p=sampling.top_p if sampled else None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=end_ids,
        bos_token_id=getattr(getattr(model, "generation_config", None), "bos_token_id", None),
        use_cache=True,  # a model saved after training with checkpointing says False
    )


class _FiniteLogits:
    """A logits processor that counts steps with NaN / infinite logits and makes them uniform,
    instead of torch.multinomial failing on this process alone (the others would then wait)."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        bad = ~torch.isfinite(scores)
        # -inf is how processors mask tokens out; only NaN, +inf, or a row with nothing left is bad.
        broken = (torch.isnan(scores) | (scores == float("inf"))).any(-1) | bad.all(-1)
        if not bool(broken.any()):
            return scores
        self.seen += 1
        return torch.where(broken[:, None], torch.zeros_like(scores), scores)


@contextlib.contextmanager
def _only_generation_config(model, config) -> Iterator[None]:
    """``generate`` fills every field its ``generation_config`` leaves unset from the model's own
    (a repetition penalty, top_k, no_repeat_ngram_size, min_new_tokens, suppressed tokens ...), so
    for the call the model's own is ``config`` too (peft wrappers read their base model's)."""
    holders = [m for m in model.modules() if "generation_config" in vars(m)]
    saved = [m.generation_config for m in holders]
    try:
        for holder in holders:
            holder.generation_config = config
        yield
    finally:
        for holder, original in zip(holders, saved):
            holder.generation_config = original


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
    """Sample one response per prompt from `model` (left padding, stop at any of the end ids of
    ``end_token_ids``), from ``softmax(logits / temperature)`` whatever the model's
    ``generation_config`` says.

    Args:
        prompts: strings (one user turn) or message lists.
        generator_seed: seeds torch's RNG just before generating, for reproducible rollouts.
    """
    end_ids = end_token_ids(model, tokenizer)
    generation_config = _plain_generation_config(model, tokenizer, sampling, end_ids)
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
        finite = _FiniteLogits()
        with _only_generation_config(model, generation_config):
            generated = model.generate(**batch, generation_config=generation_config, logits_processor=[finite])
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    prompt_length = batch["input_ids"].shape[1]
    response = generated[:, prompt_length:]
    response_mask, ended = truncate_after_eos(response, end_ids)
    response = torch.where(response_mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    decoded = []
    for row, keep, done in zip(response.tolist(), response_mask.sum(-1).tolist(), ended.tolist()):
        row = row[: keep - 1] if done else row[:keep]  # drop the end token itself
        decoded.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return Samples(
        input_ids=torch.cat([batch["input_ids"], response], dim=1),
        attention_mask=torch.cat([batch["attention_mask"], response_mask.to(batch["attention_mask"].dtype)], dim=1),
        response_mask=response_mask,
        ended=ended,
        texts=decoded,
        nonfinite_logits=finite.seen,
    )


def predicting_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int):
    """Logits [B, R, V] of the positions that predict the R = T - prompt_length response tokens.

    The logit at position t predicts token t + 1, so the predictors start one before the
    response and the last position predicts nothing. Only those positions go through the
    language-model head (``logits_to_keep``); a model that ignores it gives every position.
    """
    keep = input_ids.shape[1] - prompt_length + 1
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
        logits_to_keep=keep,
    )
    return out.logits[:, out.logits.shape[1] - keep : -1]


def response_logits(model, samples: Samples, temperature: float = 1.0) -> torch.Tensor:
    """Logits [B, R, V] that predict each response token, divided by the sampling temperature."""
    logits = predicting_logits(model, samples.input_ids, samples.attention_mask, samples.prompt_length)
    return logits.float() / temperature if temperature != 1.0 else logits


def response_logprobs(model, samples: Samples, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs [B, R] of the sampled response tokens under `model` (0 outside the response mask)."""
    logits = response_logits(model, samples, temperature)
    return token_logprobs(logits, samples.response_ids) * samples.response_mask
