"""PPO for language models: setup -> loop (rollout, score, advantages, update) -> save.

Every process rolls out its own slice of each step's prompts with its own sampling seed, and all
statistics that the update depends on (advantage whitening, loss normalisers, KL for the adaptive
controller) are reduced over all processes, so the result does not depend on how many there are.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from preference_data.validate_preferences import load_kind
from rlhf.math.advantages import explained_variance, gae, masked_moments, moments_to_stats, whiten
from rlhf.math.kl import kl_penalty, make_kl_controller
from rlhf.math.losses import ppo_policy_loss, ppo_value_loss
from rlhf.math.ops import entropy_from_logits, masked_sum, token_logprobs
from rlhf.models.loading import (
    apply_adaptation,
    check_model_path,
    count_parameters,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    save_model,
)
from rlhf.rollout.actor_critic import ActorCritic, forward_samples, load_critic, reference_logprobs
from rlhf.rollout.rewards import Scorer
from rlhf.rollout.sampling import SamplingConfig, concat_samples, render_prompt, sample
from rlhf.runtime.checkpoint import read_checkpoint_state, save_checkpoint
from rlhf.runtime.optim import build_optimizer
from rlhf.stages import common
from rlhf.stages.ppo_config import PPOConfig

__all__ = ["PPOConfig", "run"]


def _load_prompts(cfg: PPOConfig, tokenizer, backend) -> tuple[list, object]:
    quarantine = str(Path(cfg.output_dir) / "quarantine.jsonl") if backend.is_main else None
    records, report = load_kind(
        list(cfg.data.prompts),
        "prompt",
        field_map=cfg.data.field_map or None,
        quarantine_path=quarantine,
        strict=cfg.data.strict,
        adapter=cfg.data.adapter,
    )
    prompts = []
    for record in records:
        length = len(
            tokenizer(render_prompt(tokenizer, record.prompt, cfg.data.chat_template), add_special_tokens=False)[
                "input_ids"
            ]
        )
        if length > cfg.data.max_prompt_length:
            report.reject_accepted(
                record, f"prompt is {length} tokens, longer than data.max_prompt_length={cfg.data.max_prompt_length}"
            )
        else:
            prompts.append(record.prompt)
    report.quarantine.close()
    if not prompts:
        raise ValueError(f"no prompt left\n{report.summary()}")
    return prompts, report


def _global_whiten(values, mask, backend):
    """``whiten`` with the mean and variance over the valid entries of every process's batch."""
    moments = backend.all_reduce_sum(masked_moments(values, mask))
    return whiten(values, mask, stats=moments_to_stats(moments))


def _save_policy(backend, model, tokenizer, folder: Path, merge: bool) -> Path:
    full = backend.full_state_dict(model)
    policy_state = {k[len("policy.") :]: v for k, v in full.items() if k.startswith("policy.")} if full else None
    policy = backend.unwrap(model).policy
    return common.write_folder_atomically(
        backend, folder, lambda tmp: save_model(policy, tokenizer, tmp, merge=merge, state_dict=policy_state)
    )


def run(cfg: PPOConfig) -> dict:
    started = time.time()
    # Before anything is written: a folder from a stage that has not run yet is named by its key
    # (common.start checks model.name_or_path).
    for key, name in (("critic.init_from", cfg.critic.init_from), ("reward.model", cfg.reward.model)):
        if name:
            check_model_path(name, key)
    backend = common.start(cfg)
    world, rank = backend.world_size, backend.rank
    mini_batch = cfg.batch.micro_batch_size * cfg.batch.grad_accum * world
    if cfg.rollout.batch_size % mini_batch:
        raise ValueError(
            f"rollout.batch_size={cfg.rollout.batch_size} must be a multiple of the mini-batch "
            f"batch.micro_batch_size x batch.grad_accum x processes = {mini_batch}"
        )
    per_process = cfg.rollout.batch_size // world

    # Setup: policy, reference, critic (all dropout-free), reward, prompts, optimizer, resume.
    tokenizer = load_tokenizer(cfg.model)
    policy = disable_dropout(load_causal_lm(cfg.model))
    lora = cfg.model.adapt.strategy in ("lora", "qlora")
    reference_mode = cfg.reference if cfg.reference != "auto" else ("lora_disabled" if lora else "copy")
    policy = apply_adaptation(policy, cfg.model.adapt)
    critic = load_critic(
        cfg.critic.init_from or cfg.model.name_or_path,
        cfg.critic.adapt,
        pad_token_id=tokenizer.pad_token_id,
        vocab_size=len(tokenizer),
        gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    model = ActorCritic(policy, critic)
    trainable, total = count_parameters(model)

    prompts, report = _load_prompts(cfg, tokenizer, backend)
    updates_per_step = cfg.ppo.epochs * (cfg.rollout.batch_size // mini_batch)
    lr_groups = {"critic.": cfg.critic.lr} if cfg.critic.lr is not None else None
    optimizer, scheduler = build_optimizer(model, cfg.optim, cfg.max_steps * updates_per_step, lr_groups)
    model, optimizer = backend.prepare(model, optimizer, scheduler)
    # Frozen models after the engine is set up (under ZeRO-3 they get inference engines of their own).
    reference = None
    if reference_mode == "copy":
        reference = backend.prepare_frozen(disable_dropout(load_causal_lm(cfg.model)))
    scorer = Scorer(
        cfg.reward.model,
        cfg.reward.functions,
        cfg.reward.weights,
        normalize=cfg.reward.normalize,
        device=backend.device,
        prepare=backend.prepare_frozen,
    )
    kl_ctl = make_kl_controller(cfg.kl.controller, cfg.kl.coef, cfg.kl.target, cfg.kl.horizon)
    start_step, resume = common.resume(cfg, backend)
    if resume is not None:
        kl_ctl.load_state_dict(read_checkpoint_state(resume)["kl_controller"])
    tracker = common.tracker(cfg, backend, steps=cfg.max_steps, start_step=start_step, stage="ppo")
    tracker.write(report.summary())
    tracker.write(
        f"ppo: {len(prompts)} prompts; reference {reference_mode}; critic from "
        f"{cfg.critic.init_from or 'the policy'}; {world} process(es), {backend.distributed_type}; "
        f"trainable {trainable:,} / {total:,}; {cfg.max_steps} steps of {cfg.rollout.batch_size} prompts, "
        f"{updates_per_step} updates each" + (f"; resumed at {start_step}" if resume else "")
    )
    sampling = SamplingConfig(
        cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_k, cfg.rollout.top_p, True
    )
    temperature = cfg.rollout.temperature
    batches = common.global_batches(common.shuffled_stream(prompts, cfg.seed), cfg.rollout.batch_size, start_step)
    micro = cfg.batch.micro_batch_size

    for step in range(start_step + 1, cfg.max_steps + 1):
        # Step 1: rollout. Each process samples its slice; each generation chunk has its own seed,
        # a function of its position in the global batch, so that the samples (and the whole run)
        # do not depend on how many processes share the batch.
        rollout_start = time.time()
        my_prompts = next(batches)[rank * per_process : (rank + 1) * per_process]
        model.eval()
        with backend.generation_model(model) as unwrapped:
            parts = [
                sample(
                    unwrapped.policy,
                    tokenizer,
                    my_prompts[i : i + cfg.rollout.generation_batch_size],
                    sampling,
                    chat_template=cfg.data.chat_template,
                    generator_seed=(cfg.seed * 1_000_003 + step) * 100_003 + rank * per_process + i,
                )
                for i in range(0, per_process, cfg.rollout.generation_batch_size)
            ]
        samples = concat_samples(parts, tokenizer.pad_token_id)
        mask = samples.response_mask.float()

        # Step 2: score, and compute log-probs / values / reference log-probs once, without grad.
        scores = scorer.score(my_prompts, samples.texts).to(backend.device)
        if cfg.rollout.missing_eos_score is not None:
            scores = torch.where(samples.ended, scores, torch.full_like(scores, cfg.rollout.missing_eos_score))
        if cfg.reward.clip is not None:
            scores = scores.clamp(-cfg.reward.clip, cfg.reward.clip)
        raw_scores = scores
        if cfg.reward.whiten:
            scores = _global_whiten(scores, torch.ones_like(scores), backend)
        old_logps, old_values, ref_logps = [], [], []
        with torch.no_grad():
            for i in range(0, per_process, micro):
                chunk = samples.subset(list(range(i, min(i + micro, per_process))))
                logits, values = forward_samples(model, chunk, temperature)
                old_logps.append(token_logprobs(logits, chunk.response_ids) * chunk.response_mask)
                old_values.append(values.float() * chunk.response_mask)
                ref_logps.append(reference_logprobs(model, reference, chunk, temperature, backend.unwrap))
        old_logps, old_values, ref_logps = torch.cat(old_logps), torch.cat(old_values), torch.cat(ref_logps)
        rollout_s = time.time() - rollout_start

        # Step 3: per-token rewards (KL penalty, score at the last real token) and advantages.
        update_start = time.time()
        kl_tokens = kl_penalty(old_logps, ref_logps, cfg.kl.estimator) * mask
        non_score = torch.zeros_like(mask) if cfg.kl.in_loss else -kl_ctl.value * kl_tokens
        last = (mask.sum(-1).long() - 1).clamp(min=0)
        rewards = non_score.clone()
        rewards[torch.arange(len(scores), device=rewards.device), last] += scores
        advantages, returns = gae(rewards, old_values, mask, cfg.ppo.gamma, cfg.ppo.lam)
        if cfg.ppo.whiten_advantages:
            advantages = _global_whiten(advantages, mask, backend)

        # Step 4: PPO epochs over shuffled mini-batches; losses divided by global token counts.
        model.train()
        order_rng = torch.Generator().manual_seed(cfg.seed * 7919 + step * 31 + rank)
        sums = torch.zeros(8, dtype=torch.float64)  # pg, vf, entropy, clipped, vf_clipped, approx_kl, tokens, steps
        epochs_run = 0
        for _epoch in range(cfg.ppo.epochs):
            epoch_kl = torch.zeros(2, dtype=torch.float64)
            order = torch.randperm(per_process, generator=order_rng).tolist()
            local_mini = micro * cfg.batch.grad_accum
            for start in range(0, per_process, local_mini):
                rows = order[start : start + local_mini]
                normalizer = float(backend.all_reduce_sum(mask[rows].sum()))
                for m in range(0, local_mini, micro):
                    idx = rows[m : m + micro]
                    chunk = samples.subset(idx)
                    with backend.accumulate(model):
                        logits, values = forward_samples(model, chunk, temperature)
                        logps = token_logprobs(logits, chunk.response_ids)
                        pg, pg_m = ppo_policy_loss(
                            logps, old_logps[idx], advantages[idx], mask[idx], cfg.ppo.clip_eps, normalizer=normalizer
                        )
                        vf, vf_m = ppo_value_loss(
                            values.float(),
                            old_values[idx],
                            returns[idx],
                            mask[idx],
                            cfg.ppo.value_clip_eps,
                            normalizer=normalizer,
                        )
                        with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.ppo.entropy_coef != 0):
                            entropy = masked_sum(entropy_from_logits(logits), mask[idx]) / normalizer
                        loss = pg + cfg.ppo.vf_coef * vf - cfg.ppo.entropy_coef * entropy
                        if cfg.kl.in_loss:
                            kl = masked_sum(kl_penalty(logps, ref_logps[idx], "k3"), mask[idx]) / normalizer
                            loss = loss + kl_ctl.value * kl
                        backend.backward(loss)
                    tokens = float(pg_m["tokens"])
                    sums += torch.tensor(
                        [
                            float(pg.detach()),
                            float(vf.detach()),
                            float(entropy.detach()),
                            float(pg_m["clipped_tokens"]),
                            float(vf_m["vf_clipped_tokens"]),
                            float(pg_m["approx_kl"]) * tokens,
                            tokens,
                            0.0,
                        ],
                        dtype=torch.float64,
                    )
                    epoch_kl += torch.tensor([float(pg_m["approx_kl"]) * tokens, tokens], dtype=torch.float64)
                backend.optimizer_step(model, optimizer)
                scheduler.step()
                sums[7] += 1
            epochs_run += 1
            epoch_kl = backend.all_reduce_sum(epoch_kl)
            if cfg.ppo.target_kl is not None and float(epoch_kl[0] / epoch_kl[1].clamp(min=1)) > cfg.ppo.target_kl:
                break  # every process sees the same reduced value, so all stop together
        update_s = time.time() - update_start

        # Step 5: KL controller, metrics, samples, checkpoint.
        seq_kl = (old_logps - ref_logps).mul(mask).sum(-1)
        seq_k3 = kl_penalty(old_logps, ref_logps, "k3").mul(mask).sum(-1)
        stats = backend.all_reduce_sum(
            torch.stack(
                [
                    raw_scores.double().sum(),
                    seq_kl.double().sum(),
                    seq_k3.double().sum(),
                    non_score.sum().double(),
                    mask.sum().double(),
                    samples.ended.double().sum(),
                    torch.tensor(float(per_process), dtype=torch.float64),
                ]
            ).cpu()
        )
        n = float(stats[6])
        mean_kl = float(stats[1]) / n
        kl_coef = kl_ctl.value
        kl_ctl.update(mean_kl, cfg.rollout.batch_size)
        totals = backend.all_reduce_sum(sums)
        updates = max(float(sums[7]), 1.0)
        ev = backend.mean_over_processes(float(explained_variance(old_values, returns, mask)))
        metrics = {
            "score": float(stats[0]) / n,
            "kl": mean_kl,
            "kl_k3": float(stats[2]) / n,
            "non_score_reward": float(stats[3]) / n,
            "kl_coef": kl_coef,
            "policy_loss": float(totals[0]) / updates,
            "value_loss": float(totals[1]) / updates,
            "entropy": float(totals[2]) / updates,
            "clipfrac": float(totals[3] / totals[6].clamp(min=1)),
            "vf_clipfrac": float(totals[4] / totals[6].clamp(min=1)),
            "approx_kl": float(totals[5] / totals[6].clamp(min=1)),
            "explained_variance": ev,
            "eos_rate": float(stats[5]) / n,
            "response_length": float(stats[4]) / n,
            "epochs_run": epochs_run,
            "rollout_s": rollout_s,
            "update_s": update_s,
            "tokens_per_s": float(stats[4]) / max(rollout_s + update_s, 1e-9),
            "lr": scheduler.get_last_lr()[0],
        }
        # "loss" drives the progress bar's readout: the PPO objective of the last epochs.
        if step % cfg.tracking.log_every == 0 or step in (1, cfg.max_steps):  # step 1 is the summary's first_score
            tracker.log(step, {"loss": metrics["policy_loss"] + cfg.ppo.vf_coef * metrics["value_loss"], **metrics})
        if cfg.rollout.log_samples_every and (step % cfg.rollout.log_samples_every == 0 or step == 1):
            tracker.log_samples(
                step,
                [
                    {"prompt": str(p), "response": r, "score": float(s)}
                    for p, r, s in zip(my_prompts, samples.texts, raw_scores.tolist())
                ][: cfg.rollout.log_samples],
            )
        if cfg.checkpoint.save_steps and step % cfg.checkpoint.save_steps == 0 and step != cfg.max_steps:
            save_checkpoint(
                backend, cfg.output_dir, step, {"kl_controller": kl_ctl.state_dict()}, cfg.checkpoint.keep_last
            )
        tracker.advance()

    # Save: last checkpoint and the policy as a save_pretrained folder.
    save_checkpoint(
        backend, cfg.output_dir, cfg.max_steps, {"kl_controller": kl_ctl.state_dict()}, cfg.checkpoint.keep_last
    )
    model_dir = _save_policy(backend, model, tokenizer, Path(cfg.output_dir) / "model", cfg.model.adapt.merge)
    history = [r for r in tracker.history if "score" in r]
    summary = {
        "stage": "ppo",
        "steps": cfg.max_steps,
        "first_score": history[0]["score"] if history and start_step == 0 else None,
        "final_score": history[-1]["score"] if history else None,
        "final_kl": history[-1]["kl"] if history else None,
        "model_dir": str(model_dir),
        "reference": reference_mode,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "rollout_batch_size": cfg.rollout.batch_size,
        "data": report.to_dict(),
        **common.run_facts(backend, started),
    }
    tracker.finish(summary, plot_keys=("score", "kl", "policy_loss", "value_loss", "entropy", "eos_rate"))
    backend.end()
    return summary
