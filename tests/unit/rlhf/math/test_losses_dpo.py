"""DPO loss (sigmoid / cDPO, IPO, hinge) against hand-computed values and against TRL's own code."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rlhf.math.losses import DPO_LOSS_TYPES, dpo_loss
from rlhf.math.ops import sequence_logps


def approx(x):
    return pytest.approx(x, rel=1e-6, abs=1e-6)


def pair(chosen_logratio, rejected_logratio, policy=(-10.0, -12.0)):
    """[1]-shaped tensors (pc, pr, rc, rr) with the given log-ratios."""
    pc, pr = torch.tensor([policy[0]]), torch.tensor([policy[1]])
    return pc, pr, pc - chosen_logratio, pr - rejected_logratio


# ---------- hand-computed values ----------


def test_policy_equals_reference_gives_ln2():
    logps = torch.tensor([-3.0, -7.5, -20.0])
    loss, metrics = dpo_loss(logps, logps - 1, logps, logps - 1)
    assert loss.item() == approx(math.log(2))  # 0.693147
    assert metrics["margins"].item() == 0.0
    assert metrics["accuracy"].item() == 0.0  # a tie is not a correct ranking


def test_beta_point_one_log_ratios_plus_minus_one():
    loss, metrics = dpo_loss(*pair(+1.0, -1.0), beta=0.1)
    assert loss.item() == approx(0.598139)  # log(1 + e^-0.2)
    assert metrics["rewards_chosen"].item() == approx(0.1)
    assert metrics["rewards_rejected"].item() == approx(-0.1)
    assert metrics["margins"].item() == approx(0.2)
    assert metrics["accuracy"].item() == 1.0
    assert metrics["logps_chosen"].item() == -10.0
    assert metrics["logps_rejected"].item() == -12.0


def test_label_smoothing_cdpo():
    # 0.9 * log(1 + e^-0.2) + 0.1 * log(1 + e^0.2) = 0.9 * 0.598139 + 0.1 * 0.798139
    loss, _ = dpo_loss(*pair(+1.0, -1.0), beta=0.1, label_smoothing=0.1)
    assert loss.item() == approx(0.618139)
    # ls = 0.5 is "labels are coin flips": the loss no longer depends on the margin's sign.
    a, _ = dpo_loss(*pair(+1.0, -1.0), beta=0.1, label_smoothing=0.5)
    b, _ = dpo_loss(*pair(-1.0, +1.0), beta=0.1, label_smoothing=0.5)
    assert a.item() == approx(b.item())


def test_ipo_hand_computed():
    # h = 2, target 1 / (2 * 0.1) = 5: (2 - 5)^2 = 9
    loss, _ = dpo_loss(*pair(+1.0, -1.0), beta=0.1, loss_type="ipo")
    assert loss.item() == approx(9.0)
    # at the target margin the loss is 0, and it penalises overshooting too (unlike DPO)
    at, _ = dpo_loss(*pair(+3.0, -2.0), beta=0.1, loss_type="ipo")
    over, _ = dpo_loss(*pair(+5.0, -2.0), beta=0.1, loss_type="ipo")
    assert at.item() == approx(0.0)
    assert over.item() == approx(4.0)


def test_hinge_hand_computed():
    loss, _ = dpo_loss(*pair(+1.0, -1.0), beta=0.1, loss_type="hinge")
    assert loss.item() == approx(0.8)  # relu(1 - 0.2)
    loss, _ = dpo_loss(*pair(+1.0, -1.0), beta=1.0, loss_type="hinge")
    assert loss.item() == 0.0  # relu(1 - 2)


def test_reference_free_ignores_the_reference():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-3.0])  # h = 2 against a zero reference
    with_junk, m1 = dpo_loss(pc, pr, torch.tensor([5.0]), torch.tensor([-40.0]), beta=0.1, reference_free=True)
    with_none, m2 = dpo_loss(pc, pr, None, None, beta=0.1, reference_free=True)
    assert with_junk.item() == approx(0.598139)
    assert with_none.item() == approx(0.598139)
    assert m1["rewards_chosen"].item() == approx(-0.1)  # beta * (pc - 0)
    assert m2["margins"].item() == approx(0.2)
    with pytest.raises(ValueError, match="reference"):
        dpo_loss(pc, pr, None, None)


def test_bad_arguments_are_rejected():
    args = pair(1.0, -1.0)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(*args, loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*args, label_smoothing=0.7)
    with pytest.raises(ValueError, match="sigmoid loss only"):
        dpo_loss(*args, loss_type="ipo", label_smoothing=0.1)


def test_sequence_logps_sum_and_mean():
    token_logps = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[0, 1, 1], [0, 0, 0]])
    assert sequence_logps(token_logps, mask).tolist() == [-5.0, 0.0]
    assert sequence_logps(token_logps, mask, average=True).tolist() == [-2.5, 0.0]


# ---------- reduction, gradients, purity ----------


def random_batch(batch=8, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-20 * torch.rand(batch, generator=g) for _ in range(4))
    if requires_grad:
        pc.requires_grad_(True)
        pr.requires_grad_(True)
    return pc, pr, rc, rr


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_normalizer_over_micro_batches_equals_full_batch_mean(loss_type):
    pc, pr, rc, rr = random_batch(8, requires_grad=True)
    full, full_metrics = dpo_loss(pc, pr, rc, rr, loss_type=loss_type)
    full_grads = torch.autograd.grad(full, (pc, pr))

    # uneven micro-batches 3 + 5, each divided by the global pair count
    total = torch.zeros(())
    for sl in (slice(0, 3), slice(3, 8)):
        part, _ = dpo_loss(pc[sl], pr[sl], rc[sl], rr[sl], loss_type=loss_type, normalizer=8)
        total = total + part
    split_grads = torch.autograd.grad(total, (pc, pr))
    assert total.item() == approx(full.item())
    for a, b in zip(full_grads, split_grads):
        torch.testing.assert_close(a, b)
    assert not any(v.requires_grad for v in full_metrics.values())


def test_gradients_reach_policy_logps_only_and_inputs_untouched():
    pc, pr, rc, rr = random_batch(4)
    tensors = [t.clone().requires_grad_(True) for t in (pc, pr, rc, rr)]
    before = [t.detach().clone() for t in tensors]
    loss, _ = dpo_loss(*tensors, beta=0.1)
    loss.backward()
    assert tensors[0].grad is not None and tensors[1].grad is not None
    assert tensors[2].grad is None and tensors[3].grad is None
    # d/dpc of -logsigmoid(beta*h)/B = -beta * sigmoid(-beta*h) / B, and the opposite for pr
    h = (pc - rc) - (pr - rr)
    expected = -0.1 * torch.sigmoid(-0.1 * h) / 4
    torch.testing.assert_close(tensors[0].grad, expected)
    torch.testing.assert_close(tensors[1].grad, -expected)
    for t, b in zip(tensors, before):
        assert torch.equal(t.detach(), b)


# ---------- agreement with TRL 1.16 ----------
#
# TRL's DPO loss lives inside DPOTrainer._compute_loss (trl/trainer/dpo_trainer.py), together
# with the model forward and logging. We run that very method on a stub `self` and a fake model
# whose forward returns chosen-then-rejected per-token log-probs we chose, with precomputed
# reference log-probs in the batch, so TRL and dpo_loss see the same numbers.


class _FakeOutputs(SimpleNamespace):
    pass


class _FakeModel:
    training = True

    def __init__(self, per_token_logps):
        self.per_token_logps = per_token_logps  # [2B, T-1]

    def __call__(self, **kwargs):
        n, t = self.per_token_logps.shape
        return _FakeOutputs(
            log_probs=self.per_token_logps,
            entropy=torch.zeros(n, t),
            mean_logits=torch.zeros(n, t),
            is_top1=torch.zeros(n, t, dtype=torch.bool),
        )


def _trl_stub(model, loss_type, beta, label_smoothing):
    identity = lambda x: x  # noqa: E731 - single process: gather is the identity
    return SimpleNamespace(
        model=model,
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=identity, gather_for_metrics=identity),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )


def _trl_inputs(batch=6, seq=9, seed=0):
    """Random per-token log-probs, ragged completion masks (prompt first) and reference sums."""
    g = torch.Generator().manual_seed(seed)
    completion_mask = torch.zeros(2 * batch, seq, dtype=torch.long)
    for i in range(2 * batch):
        start = int(torch.randint(1, 4, (), generator=g))  # 1-3 prompt tokens
        end = int(torch.randint(start + 1, seq + 1, (), generator=g))  # 1+ completion tokens, then padding
        completion_mask[i, start:end] = 1
    shift_mask = completion_mask[:, 1:]
    per_token = -3 * torch.rand(2 * batch, seq - 1, generator=g) * shift_mask  # 0 off the completion
    ref_logps = -3 * shift_mask.sum(1) * torch.rand(2 * batch, generator=g)
    inputs = {
        "input_ids": torch.zeros(2 * batch, seq, dtype=torch.long),
        "attention_mask": torch.ones(2 * batch, seq, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_logps[:batch],
        "ref_rejected_logps": ref_logps[batch:],
    }
    return per_token, shift_mask, inputs


@pytest.mark.parametrize(
    "loss_type, beta, label_smoothing, average",
    [
        ("sigmoid", 0.1, 0.0, False),
        ("sigmoid", 0.5, 0.0, False),
        ("hinge", 0.1, 0.0, False),
        ("hinge", 0.05, 0.0, False),
        # TRL's IPO divides each log-ratio by its completion length: we get it by length-normalising.
        ("ipo", 0.1, 0.0, True),
        ("ipo", 0.5, 0.0, True),
    ],
)
def test_matches_trl_dpo_trainer(loss_type, beta, label_smoothing, average):
    dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
    per_token, shift_mask, inputs = _trl_inputs(seed=int(beta * 100))
    batch = per_token.shape[0] // 2

    trl_token = per_token.clone().requires_grad_(True)
    stub = _trl_stub(_FakeModel(trl_token), loss_type, beta, label_smoothing)
    trl_loss = dpo_trainer.DPOTrainer._compute_loss(stub, stub.model, inputs, return_outputs=False)
    (trl_grad,) = torch.autograd.grad(trl_loss, trl_token)

    ours_token = per_token.clone().requires_grad_(True)
    logps = sequence_logps(ours_token, shift_mask, average=average)
    ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
    if average:
        ref = ref / shift_mask.sum(1)
    loss, metrics = dpo_loss(logps[:batch], logps[batch:], ref[:batch], ref[batch:], beta, loss_type, label_smoothing)
    (our_grad,) = torch.autograd.grad(loss, ours_token)

    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)
    # TRL sums every position (its model zeroes the log-probs off the completion); we mask, so
    # gradients agree on the completion tokens and ours are 0 elsewhere.
    torch.testing.assert_close(our_grad, trl_grad * shift_mask)
    if not average:  # TRL logs rewards from summed log-ratios; ours are per token under IPO
        logged = stub._metrics["train"]
        for ours, theirs in [
            ("rewards_chosen", "rewards/chosen"),
            ("rewards_rejected", "rewards/rejected"),
            ("margins", "rewards/margins"),
            ("accuracy", "rewards/accuracies"),
            ("logps_chosen", "logps/chosen"),
            ("logps_rejected", "logps/rejected"),
        ]:
            assert metrics[ours].item() == pytest.approx(logged[theirs][0], rel=1e-5, abs=1e-6), ours


def test_cdpo_matches_trl_aot_on_co_sorted_batches():
    """TRL 1.16 dropped label smoothing from "sigmoid"; its "aot" loss uses the same cDPO expression
    on sorted log-ratio differences, so on a batch where the policy and reference log-ratio
    differences are sorted in the same order it is exactly cDPO pair by pair."""
    dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
    per_token, shift_mask, inputs = _trl_inputs(seed=3)
    batch = per_token.shape[0] // 2
    logps = sequence_logps(per_token, shift_mask)
    # reorder pairs so that policy (chosen - rejected) is ascending, then give the reference an
    # ascending (chosen - rejected) too
    order = torch.argsort(logps[:batch] - logps[batch:])
    per_token = torch.cat([per_token[:batch][order], per_token[batch:][order]])
    shift_mask = torch.cat([shift_mask[:batch][order], shift_mask[batch:][order]])
    mask = inputs["completion_mask"]
    inputs["completion_mask"] = torch.cat([mask[:batch][order], mask[batch:][order]])
    inputs["ref_rejected_logps"] = torch.full((batch,), -30.0)
    inputs["ref_chosen_logps"] = -30.0 + torch.linspace(-2.0, 2.0, batch)

    stub = _trl_stub(_FakeModel(per_token), "aot", 0.2, 0.1)
    trl_loss = dpo_trainer.DPOTrainer._compute_loss(stub, stub.model, inputs, return_outputs=False)
    logps = sequence_logps(per_token, shift_mask)
    loss, _ = dpo_loss(
        logps[:batch],
        logps[batch:],
        inputs["ref_chosen_logps"],
        inputs["ref_rejected_logps"],
        beta=0.2,
        label_smoothing=0.1,
    )
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)
