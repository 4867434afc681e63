"""build_optimizer: the fused AdamW kernel where the device has one, the same update as foreach."""

from __future__ import annotations

import torch
from torch import nn

from rlhf.config.sections import OptimConfig
from rlhf.runtime.optim import build_optimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))


def _train(fused: bool, steps: int = 6) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _model()
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1, schedule="constant", fused=fused)
    optimizer, scheduler = build_optimizer(model, cfg, total_steps=steps)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 6, generator=generator)
        model(x).square().mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer


def test_fused_kernel_is_used_on_cpu_and_off_when_asked():
    _, fused = _train(True, steps=1)
    _, plain = _train(False, steps=1)
    assert all(group["fused"] for group in fused.param_groups)
    assert not any(group["fused"] for group in plain.param_groups)


def test_fused_update_equals_the_foreach_update():
    fused, _ = _train(True)
    plain, _ = _train(False)
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    assert not torch.equal(fused[0].weight, _model()[0].weight)  # it did train


def test_an_unsupported_parameter_falls_back_to_foreach():
    class Meta(nn.Module):  # parameters on the meta device: no fused kernel there
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(3, 3, device="meta"))

    optimizer, _ = build_optimizer(Meta(), OptimConfig(fused=True), total_steps=1)
    assert not any(group["fused"] for group in optimizer.param_groups)
