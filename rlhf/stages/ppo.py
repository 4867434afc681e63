"""PPO for language models: setup -> loop (rollout, score, advantages, update) -> save.

Every process rolls out its own slice of each step's prompts with its own sampling seed, and all
statistics that the update depends on (advantage whitening, loss normalisers, KL for the adaptive
controller) are reduced over all processes, so the result does not depend on how many there are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.math.advantages import explained_variance
from rlhf.math.kl import kl_penalty, make_kl_controller
from rlhf.models.adapt import apply_adaptation, count_parameters, disable_dropout
from rlhf.models.loading import check_model_path, load_causal_lm, load_tokenizer, save_model
from rlhf.rollout.actor_critic import ActorCritic, load_critic
from rlhf.rollout.rewards import Scorer
from rlhf.rollout.sampling import SamplingConfig
from rlhf.runtime.checkpoint import read_checkpoint_state
from rlhf.runtime.optim import build_optimizer
from rlhf.stages import common
from rlhf.stages.inputs import input_fingerprints
from rlhf.stages.nonfinite import NonFiniteGuard
from rlhf.stages.ppo_advantages import compute_advantages
from rlhf.stages.ppo_config import PPOConfig
from rlhf.stages.ppo_rollout import load_prompts, sample_and_score
from rlhf.stages.ppo_update import ppo_epochs

__all__ = ["PPOConfig", "run"]


def _save_policy(backend, model, tokenizer, folder: Path, merge: bool) -> Path:
    full = backend.full_state_dict(model)
    policy_state = {k[len("policy.") :]: v for k, v in full.items() if k.startswith("policy.")} if full else None
    policy = backend.unwrap(model).policy
    return common.write_folder_atomically(
        backend, folder, lambda tmp: save_model(policy, tokenizer, tmp, merge=merge, state_dict=policy_state)
    )


PLOT_KEYS = ("score", "kl", "policy_loss", "value_loss", "entropy", "eos_rate")
UPDATE_METRICS = (
    "policy_loss",
    "value_loss",
    "entropy",
    "clipfrac",
    "clipfrac_low",
    "clipfrac_high",
    "vf_clipfrac",
    "approx_kl",
)
CRITIC_METRICS = ("value_loss", "vf_clipfrac", "explained_variance")


@dataclass
class _Run:
    """What setup builds and every step uses."""

    cfg: PPOConfig
    backend: Any
    tokenizer: Any
    model: Any  # ActorCritic, wrapped by the engine
    optimizer: Any
    scheduler: Any
    reference: Any  # frozen copy, or None when the reference is the policy with adapters off
    reference_mode: str
    scorer: Scorer
    kl_ctl: Any
    tracker: Any
    report: Any
    batches: Any  # iterator of global prompt batches
    sampling: SamplingConfig
    per_process: int  # samples each process rolls out per step (its prompts x group size)
    start_step: int
    trainable: int
    total: int
    started: float
    guard: NonFiniteGuard


def run(cfg: PPOConfig) -> dict:
    r = _setup(cfg)
    for step in range(r.start_step + 1, cfg.max_steps + 1):
        _step(r, step)
        if cfg.checkpoint.save_steps and step % cfg.checkpoint.save_steps == 0 and step != cfg.max_steps:
            _checkpoint(r, step)
        r.tracker.advance()
    return _save(r)


def _setup(cfg: PPOConfig) -> _Run:
    """Policy, reference, critic (all dropout-free), reward, prompts, optimizer, resume."""
    started = time.time()
    # Before anything is written: a folder from a stage that has not run yet is named by its key
    # (common.start checks model.name_or_path).
    for key, name in (("critic.init_from", cfg.critic.init_from), ("reward.model", cfg.reward.model)):
        if name:
            check_model_path(name, key)
    backend = common.start(cfg)
    guard = NonFiniteGuard(cfg, backend, "ppo", rollouts=True)
    world = backend.world_size
    mini_batch = cfg.batch.micro_batch_size * cfg.batch.grad_accum * world
    if cfg.samples_per_step % mini_batch or cfg.rollout.batch_size % world:
        raise ValueError(
            f"rollout.batch_size={cfg.rollout.batch_size} prompts x rollout.group_size={cfg.rollout.group_size} "
            f"= {cfg.samples_per_step} samples must be a multiple of the mini-batch batch.micro_batch_size x "
            f"batch.grad_accum x processes = {mini_batch}, and the prompts a multiple of the {world} process(es)"
        )

    tokenizer = load_tokenizer(cfg.model)
    # Dropout off after adaptation, which adds dropout of its own (LoRA's lora_dropout).
    policy = disable_dropout(apply_adaptation(load_causal_lm(cfg.model), cfg.model.adapt))
    reference_mode = cfg.resolved_reference()
    critic = None
    if cfg.has_critic:  # the critic-free estimators build no value model and hold no state for it
        critic = load_critic(
            cfg.critic.init_from or cfg.model.name_or_path,
            cfg.critic.adapt,
            pad_token_id=tokenizer.pad_token_id,
            vocab_size=len(tokenizer),
            gradient_checkpointing=cfg.model.gradient_checkpointing,
        )
    model = ActorCritic(policy, critic)
    trainable, total = count_parameters(model)

    prompts, report = load_prompts(cfg, tokenizer, backend)
    updates_per_step = cfg.ppo.epochs * (cfg.samples_per_step // mini_batch)
    lr_groups = {"critic.": cfg.critic.lr} if cfg.critic.lr is not None and critic is not None else None
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
    guard.begin(model, tracker, resume, started=started, plot_keys=PLOT_KEYS)
    tracker.write(report.summary())
    tracker.write(
        f"ppo: {len(prompts)} prompts; reference {reference_mode}; advantage {cfg.ppo.advantage}, "
        + (
            f"critic from {cfg.critic.init_from or 'the policy'}"
            if critic is not None
            else f"no critic, groups of {cfg.rollout.group_size}"
        )
        + f"; {world} process(es), {backend.distributed_type}; trainable {trainable:,} / {total:,}; "
        f"{cfg.max_steps} steps of {cfg.rollout.batch_size} prompts x {cfg.rollout.group_size}, "
        f"{updates_per_step} updates each" + (f"; resumed at {start_step}" if resume else "")
    )
    sampling = SamplingConfig(
        cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_k, cfg.rollout.top_p, True
    )
    batches = common.global_batches(common.shuffled_stream(prompts, cfg.seed), cfg.rollout.batch_size, start_step)
    return _Run(
        cfg,
        backend,
        tokenizer,
        model,
        optimizer,
        scheduler,
        reference,
        reference_mode,
        scorer,
        kl_ctl,
        tracker,
        report,
        batches,
        sampling,
        cfg.samples_per_step // world,
        start_step,
        trainable,
        total,
        started,
        guard,
    )


def _step(r: _Run, step: int) -> None:
    """One PPO step: rollout, score, advantages, update, KL controller and metrics."""
    cfg, backend = r.cfg, r.backend
    backend.at_step(step)
    # Step 1 and 2: rollout, scores, and the no-grad passes the update compares against.
    rollout = sample_and_score(r, step)
    mask = rollout.mask

    # Step 3: rewards (KL penalty, score) and advantages, by estimator.
    update_start = time.time()
    kl_tokens = kl_penalty(rollout.old_logps, rollout.ref_logps, cfg.kl.estimator, mask=mask)
    estimate = compute_advantages(cfg, rollout, kl_tokens, r.kl_ctl.value, backend)
    advantages, returns, non_score = estimate.advantages, estimate.returns, estimate.non_score
    valid = mask.bool()
    checks = {f"score from {name}": scores for name, scores in rollout.source_scores.items()}
    checks.update({"score": rollout.scores, "kl": kl_tokens[valid], "advantages": advantages[valid]})
    # Logits that were NaN / inf while sampling (the samples then came from a uniform stand-in).
    checks["policy logits while sampling"] = torch.tensor(float("nan") if rollout.samples.nonfinite_logits else 0.0)
    if not r.guard.check_rollout(step, checks):  # stops the run, or drops this step (no update)
        r.tracker.log(step, r.guard.counts())
        return

    # Step 4: PPO epochs over shuffled mini-batches.
    update, updates, epochs_run = ppo_epochs(r, step, rollout, advantages, returns)
    update_s = time.time() - update_start

    # Step 5: KL controller, metrics, samples.
    old_logps, ref_logps = rollout.old_logps, rollout.ref_logps
    sums = backend.all_reduce_sums(
        {
            "score": float(rollout.raw_scores.double().sum()),
            "kl": float((old_logps - ref_logps).mul(mask).sum(-1).double().sum()),
            "kl_k3": float(kl_penalty(old_logps, ref_logps, "k3", mask=mask).sum(-1).double().sum()),
            "non_score_reward": float(non_score.sum().double()),
            "response_tokens": float(mask.sum().double()),
            "ended": float(rollout.samples.ended.double().sum()),
            "samples": float(r.per_process),
        }
    )
    n = sums["samples"]
    mean_kl = sums["kl"] / n
    kl_coef = r.kl_ctl.value
    r.kl_ctl.update(mean_kl, cfg.samples_per_step)
    updates = max(float(updates), 1.0)  # optimizer steps, the same on every process
    tokens = max(update["tokens"], 1.0)
    metrics = {
        "score": sums["score"] / n,
        "kl": mean_kl,
        "kl_k3": sums["kl_k3"] / n,
        "non_score_reward": sums["non_score_reward"] / n,
        "kl_coef": kl_coef,
        "policy_loss": update["policy_loss"] / updates,
        "value_loss": update["value_loss"] / updates,
        "entropy": update["entropy"] / updates,
        "clipfrac": update["clipped_tokens"] / tokens,
        "clipfrac_low": update["clipped_low_tokens"] / tokens,
        "clipfrac_high": update["clipped_high_tokens"] / tokens,
        "vf_clipfrac": update["vf_clipped_tokens"] / tokens,
        "approx_kl": update["approx_kl_tokens"] / tokens,
        "explained_variance": (
            backend.mean_over_processes(float(explained_variance(rollout.old_values, returns, mask)))
            if cfg.has_critic
            else 0.0
        ),
        **estimate.metrics,
        "eos_rate": sums["ended"] / n,
        "response_length": sums["response_tokens"] / n,
        "epochs_run": epochs_run,
        "rollout_s": rollout.seconds,
        "update_s": update_s,
        "tokens_per_s": sums["response_tokens"] / max(rollout.seconds + update_s, 1e-9),
        "lr": r.scheduler.get_last_lr()[0],
        **r.guard.counts(),
    }
    if not cfg.has_critic:  # no value model: nothing to report about one
        metrics = {key: value for key, value in metrics.items() if key not in CRITIC_METRICS}
    if update["tokens"] == 0:  # every update of the step was dropped (nonfinite.policy=skip): no losses
        metrics = {key: value for key, value in metrics.items() if key not in UPDATE_METRICS}
    else:  # "loss" drives the progress bar's readout: the PPO objective of the last epochs.
        metrics = {"loss": metrics["policy_loss"] + cfg.ppo.vf_coef * metrics.get("value_loss", 0.0), **metrics}
    if step % cfg.tracking.log_every == 0 or step in (1, cfg.max_steps):  # step 1 is the summary's first_score
        r.tracker.log(step, metrics)
    if cfg.rollout.log_samples_every and (step % cfg.rollout.log_samples_every == 0 or step == 1):
        rows = zip(rollout.prompts, rollout.samples.texts, rollout.raw_scores.tolist())
        r.tracker.log_samples(
            step, [{"prompt": str(p), "response": t, "score": float(s)} for p, t, s in rows][: cfg.rollout.log_samples]
        )


def _checkpoint(r: _Run, step: int) -> None:
    r.guard.save_checkpoint(step, r.model, {"kl_controller": r.kl_ctl.state_dict()})


def _save(r: _Run) -> dict:
    """Last checkpoint, the policy as a save_pretrained folder, and the summary."""
    cfg, backend = r.cfg, r.backend
    _checkpoint(r, cfg.max_steps)
    model_dir = _save_policy(backend, r.model, r.tokenizer, Path(cfg.output_dir) / "model", cfg.model.adapt.merge)
    history = [row for row in r.tracker.history if "score" in row]
    summary = {
        "stage": "ppo",
        **r.guard.finished(),
        "steps": cfg.max_steps,
        "first_score": history[0]["score"] if history and r.start_step == 0 else None,
        "final_score": history[-1]["score"] if history else None,
        "final_kl": history[-1]["kl"] if history else None,
        "model_dir": str(model_dir),
        "inputs": input_fingerprints(cfg),  # what it was trained from (the pipeline compares)
        "reference": r.reference_mode,
        "trainable_parameters": r.trainable,
        "total_parameters": r.total,
        "rollout_batch_size": cfg.rollout.batch_size,
        "group_size": cfg.rollout.group_size,
        "advantage": cfg.ppo.advantage,
        "data": r.report.to_dict(),
        **common.run_facts(backend, r.started),
    }
    r.tracker.finish(summary, plot_keys=PLOT_KEYS)
    backend.end()
    return summary
