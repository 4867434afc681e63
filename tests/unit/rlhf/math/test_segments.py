"""Masks and log-prob gathering for shared-prompt rows, against hand-written values."""

import torch

from rlhf.math.segments import additive_mask, gathered_logprobs, predictor_rows, segment_mask, sequence_sums


def test_mask_of_a_prompt_two_responses_a_second_group_and_padding():
    # Row: [p p | a | b b | q | c | pad]; group 0 = prompt p, responses a, b; group 1 = prompt q, response c.
    groups = torch.tensor([[0, 0, 0, 0, 0, 1, 1, -1]])
    segments = torch.tensor([[0, 0, 1, 2, 2, 0, 1, -1]])
    allowed = segment_mask(groups, segments)[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],  # a sees the prompt and itself
        [1, 1, 0, 1, 0, 0, 0, 0],  # b does not see a
        [1, 1, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0, 0],  # group 1 sees nothing of group 0
        [0, 0, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 1],  # padding sees itself only (no empty softmax row)
    ]


def test_additive_mask():
    allowed = torch.tensor([[True, False]])
    mask = additive_mask(allowed, torch.float32)
    assert mask[0, 0] == 0 and mask[0, 1] == torch.finfo(torch.float32).min


def test_predictor_rows_share_a_position_between_targets():
    keep, row = predictor_rows(torch.tensor([5, 1, 5, 2]), 8)
    assert keep.nonzero().flatten().tolist() == [1, 2, 5]
    assert row.tolist() == [2, 0, 2, 1]


def test_gathered_logprobs_and_sums():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    logps = gathered_logprobs(logits, torch.tensor([0, 1, 1]), torch.tensor([0, 2, 0]))
    torch.testing.assert_close(logps, torch.log(torch.tensor([0.5, 0.8, 0.1])))
    sums = sequence_sums(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1, 0, 1]), 3)
    assert sums.tolist() == [2.0, 5.0, 0.0]
