"""rlhf.stages.dpo: ``dpo.length_normalize`` (auto = on for IPO only) and the loss a step takes
with it, against log-probs from plain per-sequence forward passes."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_untied_llama

from preference_data.collate import Row
from rlhf.config.loader import ConfigError, load_config
from rlhf.stages import dpo
from rlhf.stages.dpo import DPOConfig, Pair


def dpo_cfg(*overrides: str) -> DPOConfig:
    return load_config(DPOConfig, None, list(overrides))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ((), False),
        (("dpo.loss_type=ipo",), True),
        (("dpo.loss_type=hinge",), False),
        (("dpo.loss_type=ipo", "dpo.length_normalize=auto"), True),
        (("dpo.loss_type=ipo", "dpo.length_normalize=false"), False),
        (("dpo.length_normalize=true",), True),
    ],
)
def test_length_normalize_auto_is_on_for_ipo_only_and_explicit_values_win(overrides, expected):
    assert dpo_cfg(*overrides).dpo.resolved_length_normalize() is expected


def test_length_normalize_rejects_other_strings():
    with pytest.raises(ConfigError, match="dpo.length_normalize"):
        dpo_cfg("dpo.length_normalize=yes_please")


def row(prompt: list[int], reply: list[int]) -> Row:
    ids = tuple(prompt + reply)
    return Row(ids, tuple([-100] * len(prompt) + reply), tuple(range(len(ids))), False)


def plain_logps(model, r: Row) -> torch.Tensor:
    """Log-probs of the reply tokens of one unpadded sequence."""
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=torch.tensor([r.input_ids])).logits[0].float(), dim=-1)
    return torch.stack([logps[t - 1, r.labels[t]] for t in range(1, len(r.labels)) if r.labels[t] != -100])


class CPU:
    device = torch.device("cpu")


def test_an_ipo_step_takes_the_loss_of_mean_token_log_probs():
    model = tiny_untied_llama().eval()
    # Replies of different lengths, so the mean and the sum of log-probs give different losses.
    pairs = [
        Pair(row([3, 4, 5], [6, 7, 8, 9, 10, 11]), row([3, 4, 5], [12, 13]), 0),
        Pair(row([20, 21], [22, 23, 24]), row([20, 21], [25, 26, 27, 28, 29, 30, 31]), 1),
    ]
    beta = 0.5
    losses = {}
    for normalize in ("auto", "false"):
        cfg = dpo_cfg("dpo.loss_type=ipo", f"dpo.beta={beta}", "reference=none", f"dpo.length_normalize={normalize}")
        loss, _, _ = dpo._step_loss(cfg, model, pairs, "train", None, None, CPU(), 0, None)
        losses[normalize] = float(loss)
    for reduce, key in ((torch.mean, "auto"), (torch.sum, "false")):
        h = [float(reduce(plain_logps(model, p.chosen)) - reduce(plain_logps(model, p.rejected))) for p in pairs]
        want = sum((x - 1 / (2 * beta)) ** 2 for x in h) / len(h)  # no reference: log-ratios are the log-probs
        assert losses[key] == pytest.approx(want, rel=1e-5)
    assert losses["auto"] != pytest.approx(losses["false"], rel=1e-2)
