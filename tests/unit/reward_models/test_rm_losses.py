"""Reward-model losses against hand-computed values, TRL's reward loss, and batch-split invariance."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from reward_models.losses import centering_loss, kwise_loss, pairwise_loss, regression_loss


def approx(x):
    return pytest.approx(x, rel=1e-6, abs=1e-7)


def six(x):
    """A value quoted to 6 decimals (hand arithmetic)."""
    return pytest.approx(x, abs=5e-7)


def bt(d):
    """-log sigmoid(d) = log(1 + e^-d), by hand."""
    return math.log1p(math.exp(-d))


# ---------------------------------------------------------------- pairwise


def test_pairwise_bradley_terry_reference_numbers():
    loss, _ = pairwise_loss(torch.tensor([1.5]), torch.tensor([0.5]))
    assert loss.item() == six(0.313262)  # by hand: r_c - r_r = 1
    loss, _ = pairwise_loss(torch.tensor([1.5]), torch.tensor([0.5]), margin=0.5)
    assert loss.item() == six(0.474077)  # by hand: r_c - r_r = 1, margin 0.5
    loss, _ = pairwise_loss(torch.tensor([1.5]), torch.tensor([0.5]), torch.tensor([0.5]))
    assert loss.item() == six(0.474077)


def test_pairwise_mean_per_pair_margin_and_metrics():
    chosen = torch.tensor([2.0, 0.0, 1.0, 3.0])
    rejected = torch.tensor([1.0, 1.0, 1.0, 0.0])  # diffs 1, -1, 0 (tie), 3
    margin = torch.tensor([0.0, 0.0, 0.5, 1.0])
    loss, metrics = pairwise_loss(chosen, rejected, margin)
    assert loss.item() == approx((bt(1) + bt(-1) + bt(-0.5) + bt(2)) / 4)
    assert metrics["accuracy"].item() == 0.5  # the tie counts as wrong
    assert metrics["ties"].item() == 0.25
    assert metrics["margin_mean"].item() == approx(0.75)  # of r_c - r_r, margin not subtracted
    assert metrics["chosen_mean"].item() == approx(1.5)
    assert metrics["rejected_mean"].item() == approx(0.75)
    assert metrics["num_pairs"].item() == 4
    assert all(not v.requires_grad for v in metrics.values())


def test_pairwise_rejects_shapes_that_would_broadcast():
    with pytest.raises(ValueError, match=r"\[B\]"):
        pairwise_loss(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="margin"):
        pairwise_loss(torch.zeros(4), torch.zeros(4), torch.zeros(3))


def test_pairwise_bf16_is_computed_in_float32():
    loss, _ = pairwise_loss(torch.tensor([1.5], dtype=torch.bfloat16), torch.tensor([0.5], dtype=torch.bfloat16))
    assert loss.dtype == torch.float32
    assert loss.item() == six(0.313262)


def test_pairwise_matches_a_plain_loop():
    torch.manual_seed(1)
    chosen, rejected, margin = torch.randn(9), torch.randn(9), torch.rand(9)
    expected = sum(bt(c - r - m) for c, r, m in zip(chosen.tolist(), rejected.tolist(), margin.tolist())) / 9
    loss, _ = pairwise_loss(chosen, rejected, margin)
    assert loss.item() == approx(expected)


@pytest.mark.parametrize("with_margin", [False, True])
def test_pairwise_matches_trl_reward_trainer_compute_loss(with_margin):
    """Runs TRL 1.16's own RewardTrainer.compute_loss on a stub trainer and a fake model whose
    logits are fixed rewards (chosen half first, as TRL's collator stacks them)."""
    reward_trainer = pytest.importorskip("trl.trainer.reward_trainer")
    torch.manual_seed(0)
    chosen, rejected, margin = torch.randn(16), torch.randn(16), torch.rand(16)

    class FixedRewards:
        training = True

        def __call__(self, **inputs):
            return SimpleNamespace(logits=torch.cat([chosen, rejected]).unsqueeze(-1))

    model = FixedRewards()
    identity = lambda t: t  # noqa: E731  one process: gather is the identity
    stub = SimpleNamespace(
        model=model,
        args=SimpleNamespace(center_rewards_coefficient=None),
        accelerator=SimpleNamespace(gather=identity, gather_for_metrics=identity),
        _total_train_tokens=0,
        _tp_size=1,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    inputs = {"attention_mask": torch.ones(32, 5, dtype=torch.long)}
    if with_margin:
        inputs["margin"] = margin
    trl_loss = reward_trainer.RewardTrainer.compute_loss(stub, model, inputs)

    ours, metrics = pairwise_loss(chosen, rejected, margin if with_margin else None)
    assert ours.item() == approx(trl_loss.item())
    assert metrics["accuracy"].item() == approx(stub._metrics["train"]["accuracy"][0])
    assert metrics["margin_mean"].item() == approx(stub._metrics["train"]["margin"][0])


# ---------------------------------------------------------------- K-wise


def test_kwise_reference_number_k4():
    loss, metrics = kwise_loss(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), torch.tensor([[0, 1, 2, 3]]))
    assert loss.item() == six(0.207038)  # by hand: mean over the 6 pairs
    assert loss.item() == approx((3 * bt(1) + 2 * bt(2) + bt(3)) / 6)
    assert metrics["num_pairs"].item() == 6
    assert metrics["num_prompts"].item() == 1
    assert metrics["accuracy"].item() == 1.0


def test_kwise_response_order_does_not_matter():
    loss, _ = kwise_loss(torch.tensor([[1.0, 3.0, 0.0, 2.0]]), torch.tensor([[2, 0, 3, 1]]))
    assert loss.item() == six(0.207038)


def test_kwise_ties_give_no_pair():
    # ranks [0, 1, 1, 2]: pairs (0,1) d=1, (0,2) d=2, (0,3) d=3, (1,3) d=2, (2,3) d=1; (1,2) tied.
    loss, metrics = kwise_loss(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), torch.tensor([[0, 1, 1, 2]]))
    assert metrics["num_pairs"].item() == 5
    assert loss.item() == approx((2 * bt(1) + 2 * bt(2) + bt(3)) / 5)
    assert loss.item() == six(0.185793)


def test_kwise_mask_averages_per_prompt_then_over_prompts():
    # Prompt A: 3 real responses, 3 pairs with d = 1, 1, 2 (all right).
    # Prompt B: 2 real responses (slot 2 padding, holding NaN and a "best" rank), 1 pair d = -1.
    rewards = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, float("nan")]])
    ranks = torch.tensor([[0, 1, 2], [0, 1, -5]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    loss, metrics = kwise_loss(rewards, ranks, mask)
    prompt_a = (2 * bt(1) + bt(2)) / 3  # 0.251150
    prompt_b = bt(-1)  # 1.313262
    assert loss.item() == approx((prompt_a + prompt_b) / 2)
    assert loss.item() == six(0.782206)
    flat_mean_over_pairs = (2 * bt(1) + bt(2) + bt(-1)) / 4  # 0.516678: what a wrong reduction gives
    assert abs(loss.item() - flat_mean_over_pairs) > 0.2
    assert metrics["num_pairs"].item() == 4
    assert metrics["num_prompts"].item() == 2
    assert metrics["accuracy"].item() == 0.75


def test_kwise_prompts_without_pairs_are_not_counted():
    rewards = torch.tensor([[2.0, 1.0], [5.0, 0.0], [7.0, 7.0]])
    ranks = torch.tensor([[0, 1], [0, 0], [0, 1]])  # prompt 1: all tied; prompt 2: one real response
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    loss, metrics = kwise_loss(rewards, ranks, mask)
    assert loss.item() == approx(bt(1))
    assert metrics["num_prompts"].item() == 1
    empty, empty_metrics = kwise_loss(rewards[1:], ranks[1:], mask[1:])
    assert empty.item() == 0.0 and empty_metrics["num_pairs"].item() == 0


def test_kwise_with_k2_equals_pairwise():
    torch.manual_seed(2)
    chosen, rejected = torch.randn(7), torch.randn(7)
    expected, _ = pairwise_loss(chosen, rejected)
    loss, _ = kwise_loss(torch.stack([chosen, rejected], dim=1), torch.tensor([[0, 1]] * 7))
    assert loss.item() == approx(expected.item())
    # Ranks need not put the better response first.
    loss, _ = kwise_loss(torch.stack([rejected, chosen], dim=1), torch.tensor([[1, 0]] * 7))
    assert loss.item() == approx(expected.item())


def test_kwise_matches_the_double_loop():
    torch.manual_seed(3)
    rewards = torch.randn(4, 5)
    ranks = torch.randint(0, 3, (4, 5))
    mask = torch.rand(4, 5) > 0.3
    per_prompt = []
    for b in range(4):
        pairs = [
            bt(rewards[b, i].item() - rewards[b, j].item())
            for i in range(5)
            for j in range(5)
            if mask[b, i] and mask[b, j] and ranks[b, i] < ranks[b, j]
        ]
        if pairs:
            per_prompt.append(sum(pairs) / len(pairs))
    loss, metrics = kwise_loss(rewards, ranks, mask)
    assert loss.item() == approx(sum(per_prompt) / len(per_prompt))
    assert metrics["num_prompts"].item() == len(per_prompt)


def test_kwise_nan_padding_gives_finite_gradients():
    rewards = torch.tensor([[2.0, 1.0, float("nan")]], requires_grad=True)
    loss, _ = kwise_loss(rewards, torch.tensor([[0, 1, 2]]), torch.tensor([[True, True, False]]))
    loss.backward()
    assert torch.isfinite(rewards.grad).all()
    assert rewards.grad[0, 2].item() == 0.0
    s = torch.sigmoid(torch.tensor(-1.0)).item()  # d/d r_0 of -log sigmoid(r_0 - r_1) = -sigmoid(-d)
    assert rewards.grad[0, :2].tolist() == [approx(-s), approx(s)]


# ---------------------------------------------------------------- regression / centering


def test_regression_loss_hand_computed_with_mask():
    predicted = torch.tensor([[1.0, 2.0, 9.0], [0.0, 4.0, float("nan")]])
    targets = torch.tensor([[2.0, 2.0, 0.0], [3.0, 5.0, 1.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    loss, metrics = regression_loss(predicted, targets, mask)
    # errors -1, 0, -3, -1
    assert loss.item() == approx((1 + 0 + 9 + 1) / 4)
    assert metrics["mse"].item() == approx(2.75)
    assert metrics["mae"].item() == approx(5 / 4)
    assert metrics["num_targets"].item() == 4
    flat, _ = regression_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0]))
    assert flat.item() == approx(5.0)


def test_centering_loss_hand_computed():
    loss, metrics = centering_loss(torch.tensor([1.0, -2.0, 3.0]), coef=0.01)
    assert loss.item() == approx(0.01 * 14 / 3)
    assert metrics["reward_sq_mean"].item() == approx(14 / 3)
    assert metrics["reward_mean"].item() == approx(2 / 3)
    masked, _ = centering_loss(torch.tensor([[1.0, 7.0], [2.0, 2.0]]), 0.5, torch.tensor([[True, False], [True, True]]))
    assert masked.item() == approx(0.5 * 9 / 3)


# ---------------------------------------------------------------- normalizer: split invariance


def _split_sum(fn, pieces, normalizer):
    return sum(fn(*piece, normalizer=normalizer)[0] for piece in pieces)


def test_pairwise_normalizer_micro_batches_add_up_to_global_mean():
    torch.manual_seed(4)
    weight = torch.randn(3, requires_grad=True)
    chosen_x, rejected_x, margin = torch.randn(8, 3), torch.randn(8, 3), torch.rand(8)

    def pieces(slices):
        return [(chosen_x[s] @ weight, rejected_x[s] @ weight, margin[s]) for s in slices]

    full, _ = pairwise_loss(*pieces([slice(0, 8)])[0])
    (full_grad,) = torch.autograd.grad(full, weight)
    split = _split_sum(pairwise_loss, pieces([slice(0, 3), slice(3, 8)]), normalizer=8)
    (split_grad,) = torch.autograd.grad(split, weight)
    assert split.item() == approx(full.item())
    torch.testing.assert_close(split_grad, full_grad)


def test_kwise_normalizer_micro_batches_add_up_to_global_mean():
    torch.manual_seed(5)
    rewards = torch.randn(5, 4)
    ranks = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [2, 1, 0, 0], [0, 1, 9, 9], [3, 2, 1, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]).bool()
    full, metrics = kwise_loss(rewards, ranks, mask)
    assert metrics["num_prompts"].item() == 4  # prompt 1 is all ties
    # Prompts with different pair counts (6, 3, 1, 3) land in micro-batches of different sizes.
    pieces = [(rewards[s], ranks[s], mask[s]) for s in (slice(0, 2), slice(2, 3), slice(3, 5))]
    split = _split_sum(kwise_loss, pieces, normalizer=4)
    assert split.item() == approx(full.item())


def test_regression_and_centering_normalizer_add_up_to_global_mean():
    torch.manual_seed(6)
    predicted, targets = torch.randn(4, 3), torch.randn(4, 3)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]]).bool()
    slices = (slice(0, 1), slice(1, 4))
    full, _ = regression_loss(predicted, targets, mask)
    split = _split_sum(regression_loss, [(predicted[s], targets[s], mask[s]) for s in slices], normalizer=7)
    assert split.item() == approx(full.item())
    full, _ = centering_loss(predicted, 0.1, mask)
    split = _split_sum(centering_loss, [(predicted[s], 0.1, mask[s]) for s in slices], normalizer=7)
    assert split.item() == approx(full.item())


def test_normalizer_must_be_positive():
    with pytest.raises(ValueError, match="normalizer"):
        pairwise_loss(torch.zeros(2), torch.zeros(2), normalizer=0)


# ---------------------------------------------------------------- gradients and purity


def _all_losses(inputs):
    chosen, rejected, margin, rewards, ranks, mask, targets = inputs
    return [
        pairwise_loss(chosen, rejected, margin),
        kwise_loss(rewards, ranks, mask),
        regression_loss(rewards, targets, mask),
        centering_loss(rewards, 0.1, mask),
    ]


def _random_inputs():
    torch.manual_seed(7)
    return (
        torch.randn(6, requires_grad=True),
        torch.randn(6, requires_grad=True),
        torch.rand(6),
        torch.randn(3, 4, requires_grad=True),
        torch.tensor([[0, 1, 2, 3], [1, 0, 0, 2], [0, 1, 5, 5]]),
        torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]).bool(),
        torch.randn(3, 4),
    )


def test_gradients_flow_to_every_real_reward():
    inputs = _random_inputs()
    chosen, rejected, _, rewards, _, mask, _ = inputs
    for loss, _ in _all_losses(inputs):
        loss.backward()
    for grad in (chosen.grad, rejected.grad):
        assert torch.isfinite(grad).all() and (grad != 0).all()
    assert ((rewards.grad != 0) == mask).all()  # real entries get gradient, padding none


def test_inputs_are_not_modified():
    inputs = _random_inputs()
    before = [t.detach().clone() for t in inputs]
    _all_losses(inputs)
    for b, a in zip(before, inputs):
        assert torch.equal(b, a)
        assert b.dtype == a.dtype
