"""PPO math (clipped losses, GAE, whitening, KL estimators and controllers) against hand-computed values."""

import math

import pytest
import torch

from rlhf.math.advantages import explained_variance, gae, masked_moments, moments_to_stats, whiten
from rlhf.math.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_penalty,
    make_kl_controller,
)
from rlhf.math.losses import ppo_policy_loss, ppo_value_loss
from rlhf.math.ops import entropy_from_logits, masked_var


def approx(x):
    return pytest.approx(x, rel=1e-6, abs=1e-6)


def one_token(x):
    return torch.tensor([[float(x)]])


ONE = torch.ones(1, 1, dtype=torch.bool)


def ragged_mask(lengths, T):
    return torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


# ---------- clipped surrogate: hand-computed, one token each ----------


@pytest.mark.parametrize(
    "ratio, advantage, expected, clipped_active",
    [
        (1.5, +1.0, -1.2, True),  # ratio above 1 + eps with A > 0: capped at 1.2
        (0.5, -1.0, 0.8, True),  # ratio below 1 - eps with A < 0: capped at 0.8
        (0.5, +1.0, -0.5, False),  # moving against A is never capped
        (1.5, -1.0, 1.5, False),
    ],
)
def test_policy_loss_four_cases(ratio, advantage, expected, clipped_active):
    old = one_token(-2.0)
    new = (old + math.log(ratio)).requires_grad_()
    loss, metrics = ppo_policy_loss(new, old, one_token(advantage), ONE, clip_eps=0.2)
    assert loss.item() == approx(expected)
    assert metrics["clipfrac"].item() == float(clipped_active)
    assert metrics["ratio_mean"].item() == approx(ratio)
    assert metrics["ratio_max"].item() == approx(ratio)
    assert metrics["approx_kl"].item() == approx(0.5 * math.log(ratio) ** 2)
    assert metrics["approx_kl_k3"].item() == approx(ratio - 1 - math.log(ratio))
    loss.backward()
    # d/dlogp of -A * ratio is -A * ratio; the active clipped branch is flat.
    expected_grad = 0.0 if clipped_active else -advantage * ratio
    assert new.grad.item() == approx(expected_grad)


def test_policy_loss_metrics_detached_and_inputs_untouched():
    torch.manual_seed(0)
    logp = torch.randn(3, 5, requires_grad=True)
    old, adv = torch.randn(3, 5), torch.randn(3, 5)
    mask = ragged_mask([5, 2, 0], 5)
    copies = [t.detach().clone() for t in (logp, old, adv, mask)]
    loss, metrics = ppo_policy_loss(logp, old, adv, mask)
    assert loss.requires_grad
    assert all(not m.requires_grad for m in metrics.values())
    for before, after in zip(copies, (logp, old, adv, mask)):
        assert torch.equal(before, after.detach())
    assert metrics["tokens"].item() == 7


def test_policy_loss_ignores_garbage_outside_mask():
    logp = torch.tensor([[-1.0, 500.0]], requires_grad=True)  # exp(500) overflows float32
    old = torch.tensor([[-1.0, float("nan")]])
    adv = torch.tensor([[2.0, float("inf")]])
    mask = torch.tensor([[True, False]])
    loss, metrics = ppo_policy_loss(logp, old, adv, mask)
    assert loss.item() == approx(-2.0)
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert logp.grad[0, 1].item() == 0.0
    assert metrics["ratio_max"].item() == approx(1.0)


def test_policy_loss_mean_over_valid_tokens_and_shared_normalizer():
    torch.manual_seed(1)
    logp, old, adv = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    mask = ragged_mask([6, 3, 1, 4], 6)
    whole, _ = ppo_policy_loss(logp, old, adv, mask)
    ratio = torch.exp(logp - old)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    assert whole.item() == approx(per_token[mask].mean().item())
    # Two halves divided by the shared (global) count add up to the whole batch's mean.
    n = mask.sum()
    first, _ = ppo_policy_loss(logp[:2], old[:2], adv[:2], mask[:2], normalizer=n)
    second, _ = ppo_policy_loss(logp[2:], old[2:], adv[2:], mask[2:], normalizer=n)
    assert (first + second).item() == approx(whole.item())


# ---------- clipped value loss ----------


def test_value_loss_clipped_branch_active():
    # old 0, new 0.5, return 1, eps 0.2: V_clip = 0.2; 0.5 * max(0.25, 0.64) = 0.32
    values = one_token(0.5).requires_grad_()
    loss, metrics = ppo_value_loss(values, one_token(0.0), one_token(1.0), ONE, clip_eps=0.2)
    assert loss.item() == approx(0.32)
    assert metrics["vf_clipfrac"].item() == 1.0
    assert metrics["value_mean"].item() == approx(0.5)
    assert metrics["value_error"].item() == approx(0.25)
    loss.backward()
    assert values.grad.item() == 0.0  # the clipped value does not move with V


def test_value_loss_unclipped_branch_active():
    # old 0, new 0.5, return 0: (0.5)^2 = 0.25 vs (0.2)^2 = 0.04 -> 0.5 * 0.25 = 0.125
    values = one_token(0.5).requires_grad_()
    loss, metrics = ppo_value_loss(values, one_token(0.0), one_token(0.0), ONE, clip_eps=0.2)
    assert loss.item() == approx(0.125)
    assert metrics["vf_clipfrac"].item() == 0.0
    loss.backward()
    assert values.grad.item() == approx(0.5)  # d/dV 0.5 (V - R)^2 = V - R


def test_value_loss_inside_clip_range_is_plain_mse():
    loss, metrics = ppo_value_loss(one_token(0.1), one_token(0.0), one_token(1.0), ONE, clip_eps=0.2)
    assert loss.item() == approx(0.5 * 0.81)
    assert metrics["vf_clipfrac"].item() == 0.0


def test_value_loss_shared_normalizer_and_no_mutation():
    torch.manual_seed(2)
    v, old, ret = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    mask = ragged_mask([5, 2, 4, 1], 5)
    copies = [t.clone() for t in (v, old, ret, mask)]
    whole, metrics = ppo_value_loss(v, old, ret, mask)
    for before, after in zip(copies, (v, old, ret, mask)):
        assert torch.equal(before, after)
    vc = old + (v - old).clamp(-0.2, 0.2)
    per_token = 0.5 * torch.maximum((v - ret) ** 2, (vc - ret) ** 2)
    assert whole.item() == approx(per_token[mask].mean().item())
    n = mask.sum()
    a, _ = ppo_value_loss(v[:1], old[:1], ret[:1], mask[:1], normalizer=n)
    b, _ = ppo_value_loss(v[1:], old[1:], ret[1:], mask[1:], normalizer=n)
    assert (a + b).item() == approx(whole.item())
    assert all(not m.requires_grad for m in metrics.values())


# ---------- GAE ----------


def test_gae_design_numbers():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.full((1, 3), 0.5)
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    assert adv[0].tolist() == pytest.approx([0.45125, 0.475, 0.5], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.95125, 0.975, 1.0], abs=1e-6)


def reference_gae(rewards, values, lengths, gamma, lam):
    """The textbook per-row loop in plain Python floats."""
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        running = 0.0
        for t in reversed(range(lengths[b])):
            next_value = values[b][t + 1] if t + 1 < lengths[b] else 0.0
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            running = delta + gamma * lam * running
            adv[b][t] = running
    ret = [[adv[b][t] + (values[b][t] if t < lengths[b] else 0.0) for t in range(T)] for b in range(B)]
    return adv, ret


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_gae_matches_per_row_loop(seed):
    g = torch.Generator().manual_seed(seed)
    B, T = 5, 9
    lengths = torch.randint(0, T + 1, (B,), generator=g).tolist()
    lengths[0] = T  # one full row
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    gamma, lam = [(1.0, 0.95), (0.99, 0.9), (0.9, 1.0), (1.0, 0.0), (0.5, 0.7)][seed]
    mask = ragged_mask(lengths, T)
    copies = (rewards.clone(), values.clone(), mask.clone())
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    want_adv, want_ret = reference_gae(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    assert torch.allclose(adv, torch.tensor(want_adv, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ret, torch.tensor(want_ret, dtype=torch.float64), atol=1e-12)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()
    assert all(torch.equal(a, b) for a, b in zip(copies, (rewards, values, mask)))


def test_gae_ignores_values_beyond_the_last_token():
    rewards = torch.tensor([[0.0, 1.0, 7.0]])
    mask = torch.tensor([[1, 1, 0]])
    adv_a, _ = gae(rewards, torch.tensor([[0.2, 0.3, 100.0]]), mask)
    adv_b, _ = gae(rewards, torch.tensor([[0.2, 0.3, -5.0]]), mask)
    assert torch.equal(adv_a, adv_b)
    # t=1: 1 - 0.3 = 0.7; t=0: 0 + 0.3 - 0.2 + 0.95 * 0.7 = 0.765
    assert adv_a[0].tolist() == pytest.approx([0.765, 0.7, 0.0], abs=1e-6)


def test_gae_rejects_holes_and_bad_shapes():
    with pytest.raises(ValueError, match="prefix"):
        gae(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([[1, 0, 1]]))
    with pytest.raises(ValueError, match="shape"):
        gae(torch.zeros(1, 3), torch.zeros(1, 4), torch.ones(1, 3))


# ---------- whitening, explained variance, entropy ----------


def test_whiten_zero_mean_unit_var_over_valid_tokens_only():
    torch.manual_seed(3)
    values = torch.randn(4, 7) * 3 + 5
    mask = ragged_mask([7, 3, 5, 1], 7)
    values_with_garbage = values.clone()
    values_with_garbage[~mask] = float("nan")
    before = values_with_garbage.clone()
    out = whiten(values_with_garbage, mask)
    assert torch.equal(before.isnan(), values_with_garbage.isnan())  # input untouched
    assert torch.equal(before[mask], values_with_garbage[mask])
    valid = out[mask]
    assert valid.mean().item() == approx(0.0)
    assert valid.var(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)
    assert (out[~mask] == 0).all()
    # The same as whitening the valid entries alone (padding does not move the statistics).
    v = values[mask]
    assert torch.allclose(valid, (v - v.mean()) / v.std(unbiased=False), atol=1e-5)


def test_whiten_keep_mean():
    values = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    out = whiten(values, mask, shift_mean=False, eps=0.0)
    std = math.sqrt(2 / 3)  # population std of [1, 2, 3]
    assert out[0].tolist() == pytest.approx([2 - 1 / std, 2.0, 2 + 1 / std, 0.0], abs=1e-6)


def test_masked_var_is_population_variance():
    values = torch.tensor([[1.0, 2.0, 3.0, float("inf")]])
    assert masked_var(values, torch.tensor([[1, 1, 1, 0]])).item() == approx(2 / 3)
    assert masked_var(values, torch.zeros(1, 4)).item() == 0.0


def test_explained_variance_hand_computed():
    returns = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    values = torch.tensor([[1.5, 2.0, 2.5, 9.0], [3.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    # valid returns [1, 2, 3, 4]: var 1.25; residuals [-0.5, 0, 0.5, 1]: mean 0.25, var 0.3125
    assert explained_variance(values, returns, mask).item() == approx(1 - 0.3125 / 1.25)
    assert explained_variance(returns, returns, mask).item() == approx(1.0)
    constant = torch.ones(1, 3)
    assert math.isnan(explained_variance(constant, constant, torch.ones(1, 3)).item())


def test_entropy_matches_categorical():
    torch.manual_seed(4)
    logits = torch.randn(2, 3, 11) * 4
    logits[0, 0, 0] = 60.0  # a nearly one-hot row: other probabilities underflow
    want = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(entropy_from_logits(logits), want, atol=1e-5)
    hot = torch.distributions.Categorical(logits=logits / 0.7).entropy()
    assert torch.allclose(entropy_from_logits(logits, temperature=0.7), hot, atol=1e-5)
    assert entropy_from_logits(torch.zeros(1, 1, 8)).item() == approx(math.log(8))


# ---------- KL estimators and controllers ----------


def test_kl_estimators_design_numbers():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    assert kl_penalty(logp, ref, "k1").item() == approx(0.5)
    assert kl_penalty(logp, ref, "k3").item() == approx(0.106531)  # e^-0.5 - 1 + 0.5
    assert kl_penalty(logp, ref, "abs").item() == approx(0.5)
    assert kl_penalty(logp, ref, "mse").item() == approx(0.125)
    assert kl_penalty(ref, logp, "abs").item() == approx(0.5)
    assert kl_penalty(logp, ref).item() == approx(0.5)  # k1 by default


def test_kl_unknown_estimator_names_the_choices():
    with pytest.raises(ValueError, match="k1, k3, abs, mse"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k2")
    assert KL_ESTIMATORS == ("k1", "k3", "abs", "mse")


def test_adaptive_controller_step_by_step():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    expected = 0.1
    # (current KL, n_steps, proportional error after the +-0.2 clip)
    for kl, n, err in [(6.6, 256, 0.1), (30.0, 256, 0.2), (0.0, 512, -0.2), (5.4, 100, -0.1), (6.0, 64, 0.0)]:
        expected *= 1 + err * n / 10000
        assert ctl.update(kl, n) == approx(expected)
        assert ctl.value == approx(expected)
    assert ctl.update(torch.tensor(7.2), 1000) == approx(expected * (1 + 0.2 * 0.1))


def test_adaptive_controller_rejects_sign_flipping_steps():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    with pytest.raises(ValueError, match="horizon"):
        ctl.update(0.0, 500)


def test_controllers_state_dict_round_trip_and_factory():
    ctl = make_kl_controller("adaptive", 0.2, target=6.0, horizon=1000)
    assert isinstance(ctl, AdaptiveKLController)
    ctl.update(12.0, 100)
    state = ctl.state_dict()
    assert state == {"value": pytest.approx(0.2 * 1.02)} and isinstance(state["value"], float)
    resumed = make_kl_controller("adaptive", 0.2, target=6.0, horizon=1000)
    resumed.load_state_dict(state)
    assert resumed.value == ctl.value
    assert resumed.update(3.0, 100) == ctl.update(3.0, 100)

    fixed = make_kl_controller("fixed", 0.05)
    assert isinstance(fixed, FixedKLController)
    assert fixed.update(100.0, 256) == 0.05 and fixed.value == 0.05
    other = FixedKLController(0.3)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05

    with pytest.raises(ValueError, match="fixed, adaptive"):
        make_kl_controller("linear", 0.1)
    with pytest.raises(ValueError, match="target"):
        make_kl_controller("adaptive", 0.1)


def test_whiten_with_summed_moments_equals_whiten_of_the_whole():
    # Two "processes" each hold half the rows; their summed moments give the whole batch's stats.
    g = torch.Generator().manual_seed(3)
    values = torch.randn(6, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 5, generator=g) > 0.3
    moments = masked_moments(values[:3], mask[:3]) + masked_moments(values[3:], mask[3:])
    mean, var = moments_to_stats(moments)
    kept = values[mask]
    assert float(mean) == pytest.approx(float(kept.mean()))
    assert float(var) == pytest.approx(float(kept.var(unbiased=False)))
    halves = torch.cat(
        [whiten(values[:3], mask[:3], stats=(mean, var)), whiten(values[3:], mask[3:], stats=(mean, var))]
    )
    torch.testing.assert_close(halves, whiten(values, mask))


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
def test_kl_mask_is_applied_before_the_exponential(estimator):
    # Pad positions after EOS hold whatever the forward pass gave: at a low temperature the
    # policy's log-prob of the pad token is hugely negative while the reference's is 0 (masked),
    # so exp(logp_ref - logp) overflows there unless it is masked first.
    logp = torch.tensor([[-1.0, -1e4, float("-inf")], [-0.5, -2.0, -3e38]], requires_grad=True)
    ref = torch.tensor([[-1.5, 0.0, 0.0], [-0.5, -1.0, 0.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]])
    out = kl_penalty(logp, ref, estimator, mask=mask)
    d = [0.5, 0.0, -1.0]  # logp - ref at the three valid tokens
    want = {
        "k1": d,
        "k3": [math.expm1(-x) + x for x in d],
        "abs": [abs(x) for x in d],
        "mse": [0.5 * x * x for x in d],
    }[estimator]
    assert out[mask.bool()].tolist() == pytest.approx(want, abs=1e-6)
    assert (out[~mask.bool()] == 0).all()
    (out.sum() * 0.1).backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad[~mask.bool()] == 0).all()
    assert torch.equal(ref, torch.tensor([[-1.5, 0.0, 0.0], [-0.5, -1.0, 0.0]]))  # input untouched


def test_kl_without_a_mask_is_unchanged():
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    assert kl_penalty(logp, ref, "k3", mask=None).tolist() == kl_penalty(logp, ref, "k3").tolist()
