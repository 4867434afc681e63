"""AdamW with decoupled weight decay and a warm-up + decay learning-rate schedule."""

from __future__ import annotations

import math

import torch

from rlhf.config.sections import OptimConfig


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak LR after ``step`` optimizer steps (linear warm-up, then decay to 0)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# Devices with torch's fused AdamW kernel (torch.utils._foreach_utils lists them; private API).
FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu", "hpu")


def _adamw(groups: list[dict], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW, fused when ``cfg.fused`` and every parameter is a float tensor on a device with the
    fused kernel, else torch's default for the device (a loop on CPU, foreach on CUDA)."""
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps}
    params = [p for group in groups for p in group["params"]]
    fusable = all(p.device.type in FUSED_DEVICES and torch.is_floating_point(p) for p in params)
    return (
        torch.optim.AdamW(groups, fused=True, **kwargs)
        if cfg.fused and fusable
        else torch.optim.AdamW(groups, **kwargs)
    )


def build_optimizer(
    model: torch.nn.Module, cfg: OptimConfig, total_steps: int, lr_by_prefix: dict[str, float] | None = None
):
    """AdamW over trainable parameters (no decay on biases and norm weights) and its scheduler.

    ``lr_by_prefix`` gives the parameters whose names start with a prefix their own peak LR
    (e.g. ``{"critic.": 1e-5}`` for PPO's value model); the schedule scales every group alike.
    """
    lr_by_prefix = lr_by_prefix or {}
    buckets: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = next((value for prefix, value in lr_by_prefix.items() if name.startswith(prefix)), cfg.lr)
        buckets.setdefault((lr, p.ndim < 2 or "norm" in name.lower()), []).append(p)
    groups = [
        {"params": params, "lr": lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay}
        for (lr, no_decay), params in buckets.items()
    ]
    optimizer = _adamw(groups, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, warmup_steps=cfg.warmup_steps, total_steps=total_steps, schedule=cfg.schedule),
    )
    return optimizer, scheduler
