"""Did alignment work? Sample each policy on held-out prompts, score, compare, measure KL.

For each policy: mean judge / reward-model score, win rate against a baseline policy on the same
prompts (ties count half, with a 95% interval), KL to a reference policy measured on the policy's
own samples, response length and EOS rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rlhf.rollout.sampling import SamplingConfig, response_logprobs, sample


def win_rate(scores: Sequence[float], baseline: Sequence[float]) -> dict[str, float]:
    """Per-prompt comparison of two score lists: win / tie / loss shares and the win rate
    (wins + ties / 2) with a normal-approximation 95% interval over prompts."""
    if len(scores) != len(baseline) or not scores:
        raise ValueError(
            f"win_rate needs two equally long, non-empty score lists, got {len(scores)} and {len(baseline)}"
        )
    outcomes = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, baseline)]
    n = len(outcomes)
    rate = sum(outcomes) / n
    std = math.sqrt(sum((o - rate) ** 2 for o in outcomes) / max(n - 1, 1))
    half = 1.96 * std / math.sqrt(n)
    return {
        "win_rate": rate,
        "ci95_low": max(0.0, rate - half),
        "ci95_high": min(1.0, rate + half),
        "wins": sum(o == 1.0 for o in outcomes) / n,
        "ties": sum(o == 0.5 for o in outcomes) / n,
        "losses": sum(o == 0.0 for o in outcomes) / n,
    }


@torch.no_grad()
def sample_with_kl(
    policy,
    reference,
    tokenizer,
    prompts: Sequence,
    sampling: SamplingConfig,
    *,
    batch_size: int = 32,
    seed: int = 0,
    chat_template: bool = True,
) -> dict[str, list]:
    """Responses of `policy` with, per response, KL(policy || reference) summed over its tokens.

    The KL is the k1 estimate log p(y) - log q(y) on the policy's own samples (unbiased for the
    sequence-level KL), with both models' logits divided by the sampling temperature, i.e. the KL
    between the distributions actually sampled. `reference` None gives KL 0.
    """
    texts, kls, lengths, ended = [], [], [], []
    for start in range(0, len(prompts), batch_size):
        batch = sample(
            policy,
            tokenizer,
            prompts[start : start + batch_size],
            sampling,
            chat_template=chat_template,
            generator_seed=seed + start,
        )
        texts += batch.texts
        lengths += batch.response_mask.sum(-1).tolist()
        ended += batch.ended.tolist()
        if reference is None:
            kls += [0.0] * len(batch.texts)
            continue
        temperature = sampling.temperature if sampling.do_sample and sampling.temperature > 0 else 1.0
        logp = response_logprobs(policy, batch, temperature)
        ref = response_logprobs(reference, batch, temperature)
        kls += (logp - ref).sum(-1).tolist()
    return {"texts": texts, "kl": kls, "length": lengths, "ended": ended}
