"""Backend on one CPU process: finiteness flags, the parameter check, and a step applied or dropped."""

import math

import pytest
import torch

from rlhf.runtime.backend import Backend


@pytest.fixture
def backend():
    b = Backend(seed=0, mixed_precision="no", max_grad_norm=1.0)
    yield b
    b.end()


def test_nonfinite_names_lists_the_bad_values_in_order(backend):
    values = {
        "loss": 1.5,
        "grad_norm": float("nan"),
        "scores": torch.tensor([0.0, -math.inf, 2.0]),
        "unknown": None,  # an engine that does not report a norm: nothing to judge
        "empty": torch.tensor([]),
        "kl": torch.tensor(math.inf),
    }
    assert backend.nonfinite_names(values) == ["grad_norm", "scores", "kl"]
    assert backend.all_finite({"loss": 0.0, "scores": torch.ones(3)})
    assert not backend.all_finite({"loss": float("inf")})


def test_parameters_finite_sees_one_bad_entry(backend):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    assert backend.parameters_finite(model)
    with torch.no_grad():
        model[1].bias[0] = float("nan")
    assert not backend.parameters_finite(model)


def _step_ready(backend, lr=0.1):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model, optimizer = backend.prepare(model, optimizer)
    with backend.accumulate(model):
        backend.backward(model(torch.ones(4, 3)).pow(2).sum())
    return model, optimizer


def test_skip_step_leaves_parameters_and_optimizer_state_alone(backend):
    model, optimizer = _step_ready(backend)
    before = [p.detach().clone() for p in model.parameters()]
    norm = float(torch.cat([model.weight.grad.flatten(), model.bias.grad]).norm())
    assert norm > 1.0  # so that clipping to 1 changes the gradients
    assert backend.clip_gradients(model) == pytest.approx(norm)  # the norm before clipping
    backend.skip_step(optimizer)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert not optimizer.optimizer.state  # AdamW never saw the step: no moments, no step count

    # The same step applied: the first AdamW update moves each weight by lr (sign of its clipped grad).
    with backend.accumulate(model):
        backend.backward(model(torch.ones(4, 3)).pow(2).sum())
    backend.clip_gradients(model)
    assert backend.apply_step(optimizer) is True
    moved = (before[0] - model.weight.detach()).abs()
    assert torch.allclose(moved, torch.full_like(moved, 0.1), atol=1e-4)
    assert all(p.grad is None for p in model.parameters())


def test_single_process_can_skip_and_has_no_loss_scaler(backend):
    assert backend.can_skip_steps and not backend.loss_scaling
