"""rlhf.stages.ppo_rollout: the scores added to the rewards (missing-EOS score, clip, whitening)
against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.config.loader import load_config
from rlhf.stages.ppo_config import PPOConfig
from rlhf.stages.ppo_rollout import shape_scores


class OneProcess:
    """The one method of Backend that whitening uses, for a single process."""

    def all_reduce_sum(self, value):
        return value


def ppo_cfg(*overrides: str) -> PPOConfig:
    return load_config(PPOConfig, None, list(overrides))


SCORES = torch.tensor([1.0, 2.0, 3.0, 6.0])
ENDED = torch.tensor([True, True, True, True])


def test_whitened_scores_keep_their_mean():
    raw, used = shape_scores(ppo_cfg("reward.whiten=true"), SCORES, ENDED, OneProcess())
    # mean 3, population variance (4 + 1 + 0 + 9) / 4 = 3.5: unit variance, the mean kept.
    std = math.sqrt(3.5)
    assert used.tolist() == pytest.approx([3 - 2 / std, 3 - 1 / std, 3.0, 3 + 3 / std], abs=1e-6)
    assert raw.tolist() == [1.0, 2.0, 3.0, 6.0]


def test_missing_eos_score_and_clip_come_before_whitening():
    cfg = ppo_cfg("reward.whiten=true", "rollout.missing_eos_score=-1.0", "reward.clip=5.0")
    raw, used = shape_scores(cfg, SCORES, torch.tensor([True, False, True, True]), OneProcess())
    assert raw.tolist() == [1.0, -1.0, 3.0, 5.0]
    # mean 2, population variance (1 + 9 + 1 + 9) / 4 = 5
    std = math.sqrt(5.0)
    assert used.tolist() == pytest.approx([2 - 1 / std, 2 - 3 / std, 2 + 1 / std, 2 + 3 / std], abs=1e-6)


def test_without_whitening_the_used_scores_are_the_logged_ones():
    raw, used = shape_scores(ppo_cfg(), SCORES, torch.tensor([True, False, True, True]), OneProcess())
    assert raw.tolist() == used.tolist() == [1.0, -1.0, 3.0, 6.0]  # missing_eos_score defaults to -1
