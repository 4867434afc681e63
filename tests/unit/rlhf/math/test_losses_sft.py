"""SFT loss and token ops against hand-computed values, and invariance to the batch split."""

import math

import pytest
import torch

from rlhf.math.losses import sft_loss
from rlhf.math.ops import IGNORE_INDEX, masked_mean, token_logprobs
from rlhf.runtime.optim import lr_factor


def test_token_logprobs_hand_computed():
    logits = torch.tensor([[[0.0, math.log(3.0)], [2.0, 2.0]]])  # p = [1/4, 3/4], [1/2, 1/2]
    targets = torch.tensor([[1, IGNORE_INDEX]])
    out = token_logprobs(logits, targets)
    assert out.tolist()[0][0] == pytest_approx(math.log(0.75))
    assert out.tolist()[0][1] == 0.0
    # temperature 2 halves the logits: p = [1/(1+sqrt3), sqrt3/(1+sqrt3)]
    hot = token_logprobs(logits, targets, temperature=2.0)
    assert hot[0, 0].item() == pytest_approx(math.log(math.sqrt(3) / (1 + math.sqrt(3))))


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-6, abs=1e-7)


def test_sft_loss_hand_computed_and_shifted():
    # position 0 predicts token at 1 (label 1, p=3/4); position 1 predicts label at 2 (ignored).
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX]])
    loss, metrics = sft_loss(logits, labels, num_target_tokens=2)
    assert loss.item() == pytest_approx(-math.log(0.75) / 2)
    assert metrics["tokens"].item() == 1
    assert not metrics["nll_sum"].requires_grad


def test_masked_mean_hand_computed():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 0, 1], [0, 0, 0]])
    assert masked_mean(values, mask).item() == 2.0
    assert masked_mean(values, mask, dim=1).tolist() == [2.0, 0.0]


def test_global_token_normalisation_makes_gradients_split_invariant():
    """Summing micro-batch gradients of loss/global_tokens equals the full-batch gradient,
    even when micro-batches hold very different numbers of target tokens."""
    torch.manual_seed(0)
    weight = torch.randn(8, 5, requires_grad=True)
    inputs = torch.randn(4, 6, 8)
    labels = torch.randint(0, 5, (4, 6))
    labels[0, 2:] = IGNORE_INDEX  # ragged: few targets in the first sequence
    labels[3, 1:4] = IGNORE_INDEX
    total = int((labels[:, 1:] != IGNORE_INDEX).sum())

    full, _ = sft_loss(inputs @ weight, labels, total)
    (expected,) = torch.autograd.grad(full, weight)
    accumulated = torch.zeros_like(weight)
    for i in range(4):
        part, _ = sft_loss(inputs[i : i + 1] @ weight, labels[i : i + 1], total)
        accumulated += torch.autograd.grad(part, weight)[0]
    torch.testing.assert_close(accumulated, expected)
    # The naive per-micro-batch mean would differ here:
    naive = torch.zeros_like(weight)
    for i in range(4):
        n = int((labels[i, 1:] != IGNORE_INDEX).sum())
        part, _ = sft_loss(inputs[i : i + 1] @ weight, labels[i : i + 1], n)
        naive += torch.autograd.grad(part, weight)[0] / 4
    assert not torch.allclose(naive, expected)


def test_lr_schedule_hand_values():
    kw = dict(warmup_steps=4, total_steps=14)
    assert [lr_factor(s, schedule="linear", **kw) for s in (0, 3, 4, 9, 14)] == [0.25, 1.0, 1.0, 0.5, 0.0]
    assert lr_factor(9, schedule="cosine", **kw) == pytest_approx(0.5)
    assert lr_factor(100, schedule="constant", **kw) == 1.0


def test_loss_on_kept_targets_equals_the_full_logits_loss():
    from rlhf.math.losses import sft_loss_on_targets
    from rlhf.math.ops import IGNORE_INDEX, shift_labels

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, IGNORE_INDEX], [IGNORE_INDEX, 1, 2, 6, 0]])
    full, full_metrics = sft_loss(logits, labels, 9.0)
    targets = shift_labels(labels)
    keep = targets != IGNORE_INDEX
    kept, kept_metrics = sft_loss_on_targets(logits[keep], targets[keep], 9.0)
    torch.testing.assert_close(kept, full, atol=1e-6, rtol=0)
    assert int(kept_metrics["tokens"]) == int(full_metrics["tokens"]) == 6
    # By hand for one token: -log softmax(logits[0, 1])[3].
    one, _ = sft_loss_on_targets(logits[0, 1:2], torch.tensor([3]), 1.0)
    assert float(one) == pytest.approx(float(-torch.log_softmax(logits[0, 1], -1)[3]), abs=1e-6)
