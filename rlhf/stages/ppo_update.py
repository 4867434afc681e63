"""Step 4 of the RL loop in ``rlhf.stages.ppo``: the epochs of clipped-surrogate updates over
shuffled mini-batches, each loss divided by counts over every process."""

from __future__ import annotations

import torch

from rlhf.math.kl import kl_penalty
from rlhf.math.losses import aggregate_token_loss, ppo_policy_loss, ppo_value_loss
from rlhf.math.ops import entropy_from_logits, masked_sum, token_logprobs
from rlhf.math.seeds import derive_seed
from rlhf.rollout.actor_critic import forward_samples
from rlhf.stages.ppo_rollout import Rollout

# The update's sums over micro-batches and processes, by name: losses and token counts.
UPDATE_SUMS = (
    "policy_loss",
    "value_loss",
    "entropy",
    "clipped_tokens",
    "clipped_low_tokens",
    "clipped_high_tokens",
    "vf_clipped_tokens",
    "approx_kl_tokens",
    "tokens",
)


def ppo_epochs(r, step: int, rollout: Rollout, advantages, returns) -> tuple[dict[str, float], int, int]:
    """PPO epochs over shuffled mini-batches, losses divided by global token counts.

    Returns the UPDATE_SUMS reduced over processes, the number of optimizer steps, and the
    number of epochs run (fewer than ppo.epochs when ppo.target_kl stops them).
    """
    cfg, backend, model = r.cfg, r.backend, r.model
    mask, micro, temperature = rollout.mask, cfg.batch.micro_batch_size, cfg.rollout.temperature
    model.train()
    order_rng = torch.Generator().manual_seed(derive_seed(cfg.seed, step, backend.rank, 1))
    sums = dict.fromkeys(UPDATE_SUMS, 0.0)
    local_mini = micro * cfg.batch.grad_accum
    updates = epochs_run = attempts = 0
    for _ in range(cfg.ppo.epochs):
        epoch_kl = {"approx_kl_tokens": 0.0, "tokens": 0.0}
        order = torch.randperm(r.per_process, generator=order_rng).tolist()
        for start in range(0, r.per_process, local_mini):
            rows = order[start : start + local_mini]
            normalizer = float(backend.all_reduce_sum(mask[rows].sum()))
            # Responses with a token, for the per-response aggregations (global, like the tokens).
            sequences = float(backend.all_reduce_sum(mask[rows].bool().any(-1).sum()))
            aggregate = {
                "aggregation": cfg.ppo.loss_aggregation,
                "num_sequences": sequences,
                "constant_length": cfg.rollout.max_new_tokens,
            }
            mini = dict.fromkeys(UPDATE_SUMS, 0.0)  # this mini-batch's sums, kept if its update is applied
            objective = 0.0  # what was back-propagated, checked for finiteness
            for m in range(0, local_mini, micro):
                idx = rows[m : m + micro]
                chunk = rollout.samples.subset(idx)
                with backend.accumulate(model):
                    logits, values = forward_samples(model, chunk, temperature, with_values=cfg.has_critic)
                    logps = token_logprobs(logits, chunk.response_ids)
                    pg, pg_m = ppo_policy_loss(
                        logps,
                        rollout.old_logps[idx],
                        advantages[idx],
                        mask[idx],
                        cfg.ppo.clip_eps,
                        clip_eps_high=cfg.ppo.clip_eps_high,
                        normalizer=normalizer,
                        **aggregate,
                    )
                    vf, vf_m = torch.zeros(()), {"vf_clipped_tokens": 0.0}
                    if values is not None:
                        vf, vf_m = ppo_value_loss(
                            values.float(),
                            rollout.old_values[idx],
                            returns[idx],
                            mask[idx],
                            cfg.ppo.value_clip_eps,
                            normalizer=normalizer,
                        )
                    with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.ppo.entropy_coef != 0):
                        entropy = masked_sum(entropy_from_logits(logits), mask[idx]) / normalizer
                    loss = pg + cfg.ppo.vf_coef * vf - cfg.ppo.entropy_coef * entropy
                    if cfg.kl.in_loss:
                        # logps are not masked: pad positions after EOS must not reach the exponential.
                        k3 = kl_penalty(logps, rollout.ref_logps[idx], "k3", mask=mask[idx])
                        kl = aggregate_token_loss(k3, mask[idx], num_tokens=normalizer, **aggregate)
                        loss = loss + r.kl_ctl.value * kl
                    backend.backward(loss)
                objective += float(loss.detach())
                tokens = float(pg_m["tokens"])
                mini["policy_loss"] += float(pg.detach())
                mini["value_loss"] += float(vf.detach())
                mini["entropy"] += float(entropy.detach())
                mini["clipped_tokens"] += float(pg_m["clipped_tokens"])
                mini["clipped_low_tokens"] += float(pg_m["clipped_low_tokens"])
                mini["clipped_high_tokens"] += float(pg_m["clipped_high_tokens"])
                mini["vf_clipped_tokens"] += float(vf_m["vf_clipped_tokens"])
                mini["approx_kl_tokens"] += float(pg_m["approx_kl"]) * tokens
                mini["tokens"] += tokens
            attempts += 1
            _, stepped = r.guard.optimizer_step(
                step, model, r.optimizer, r.scheduler, objective, where=f" (update {attempts})"
            )
            if stepped:
                updates += 1
                sums = {key: sums[key] + mini[key] for key in UPDATE_SUMS}
                epoch_kl = {key: epoch_kl[key] + mini[key] for key in epoch_kl}
        epochs_run += 1
        epoch_kl = backend.all_reduce_sums(epoch_kl)
        if (
            cfg.ppo.target_kl is not None
            and epoch_kl["approx_kl_tokens"] / max(epoch_kl["tokens"], 1.0) > cfg.ppo.target_kl
        ):
            break  # every process sees the same reduced value, so all stop together
    return backend.all_reduce_sums(sums), updates, epochs_run
