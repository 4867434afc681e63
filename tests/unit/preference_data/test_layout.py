"""Shared-prompt layout: the prompt found in token space, rows packed, indices of every response."""

from __future__ import annotations

import pytest
import torch

from preference_data.layout import IGNORE_INDEX, SharedGroup, layout_groups, pack_groups, share_prompt


def test_the_prompt_is_the_longest_common_prefix():
    group = share_prompt([(5, 6, 7, 8), (5, 6, 9), (5, 6, 7, 1, 2)])
    assert group.prompt == (5, 6)
    assert group.responses == ((7, 8), (9,), (7, 1, 2))
    assert group.length == 2 + 2 + 1 + 3
    assert group.unshared_length == 4 + 3 + 5


def test_identical_sequences_keep_their_last_token():
    # A tie of identical responses: each still needs a token of its own to read its reward at.
    group = share_prompt([(1, 2, 3), (1, 2, 3)])
    assert group.prompt == (1, 2)
    assert group.responses == ((3,), (3,))
    assert share_prompt([(4,), (4,)]).prompt == ()


def test_the_prompt_stops_before_the_first_labelled_token():
    sequences = [(1, 2, 3, 4), (1, 2, 3, 5)]
    labels = [(IGNORE_INDEX, IGNORE_INDEX, 3, 4), (IGNORE_INDEX, IGNORE_INDEX, 3, 5)]
    group = share_prompt(sequences, labels)
    assert group.prompt == (1, 2)
    assert group.labels == ((3, 4), (3, 5))


def test_a_single_sequence_shares_nothing():
    assert share_prompt([(1, 2, 3)]).prompt == ()


def test_bad_groups_are_refused():
    with pytest.raises(ValueError):
        share_prompt([])
    with pytest.raises(ValueError):
        share_prompt([(1,), ()])
    with pytest.raises(ValueError):
        share_prompt([(1, 2)], [(1,)])


def test_first_fit_decreasing_fills_rows_to_the_budget():
    assert pack_groups([5, 3, 2, 4], 7) == [[0, 2], [1, 3]]
    assert pack_groups([9, 1], 4) == [[0], [1]]  # a group longer than the budget has its own row
    assert pack_groups([2, 2, 2], 6) == [[0, 1, 2]]


@pytest.mark.parametrize("align", ["right", "left"])
def test_rows_hold_every_token_once_with_positions_restarting_after_the_prompt(align):
    groups = [share_prompt([(1, 2, 3), (1, 2, 4, 5)]), share_prompt([(7, 8), (7, 9)])]
    batch = layout_groups(groups, pad_token_id=0, pack=True, row_tokens=8, align=align)
    assert batch["input_ids"].shape == (1, 8)
    ids = batch["input_ids"][0].tolist()
    positions = batch["position_ids"][0].tolist()
    real = [i for i, g in enumerate(batch["group_ids"][0].tolist()) if g >= 0]
    assert len(real) == 5 + 3
    # Group 0 is [1 2 | 3 | 4 5]: positions 0 1 | 2 | 2 3; group 1 is [7 | 8 | 9]: 0 | 1 | 1.
    assert [ids[i] for i in real] == [1, 2, 3, 4, 5, 7, 8, 9]
    assert [positions[i] for i in real] == [0, 1, 2, 2, 3, 0, 1, 1]
    assert [batch["segment_ids"][0, i].item() for i in real] == [0, 0, 1, 2, 2, 0, 1, 2]
    # Rewards are read at each response's last token.
    flat = batch["input_ids"].flatten()
    assert flat[batch["read_index"]].tolist() == [3, 5, 8, 9]
    assert batch["index"].tolist() == [[0, 1], [2, 3]]
    assert int(batch["tokens_real"]) == 8 and int(batch["tokens_computed"]) == 8
    assert int(batch["tokens_unshared"]) == 4 * 4  # 4 separate sequences padded to 4 tokens


def test_predictors_of_labelled_tokens():
    sequences = [(1, 2, 3, 4), (1, 2, 6)]
    labels = [(IGNORE_INDEX, IGNORE_INDEX, 3, 4), (IGNORE_INDEX, IGNORE_INDEX, 6)]
    batch = layout_groups([share_prompt(sequences, labels)], pad_token_id=0)
    # Row: [1 2 | 3 4 | 6]; 3 and 6 are predicted by the prompt's last position (1), 4 by 3's (2).
    assert batch["target_ids"].tolist() == [3, 4, 6]
    assert batch["target_sequence"].tolist() == [0, 0, 1]
    assert batch["predictor_index"].tolist() == [1, 2, 1]


def test_unpacked_layout_has_a_row_per_group_and_left_padding():
    groups = [share_prompt([(1, 2, 3), (1, 2, 4)]), share_prompt([(5,), (6,)])]
    batch = layout_groups(groups, pad_token_id=0, pack=False, align="left")
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [0, 0, 5, 6]]
    assert batch["group_ids"].tolist() == [[0, 0, 0, 0], [-1, -1, 1, 1]]
    assert batch["read_index"].tolist() == [2, 3, 6, 7]


def test_groups_of_different_sizes():
    groups = [SharedGroup((1,), ((2,), (3,), (4,))), SharedGroup((), ((5, 6),))]
    batch = layout_groups(groups, pad_token_id=0)
    assert batch["mask"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["index"][0].tolist() == [0, 1, 2]
    assert batch["index"][1, 0].item() == 3
    assert torch.equal(batch["input_ids"].flatten()[batch["read_index"]], torch.tensor([2, 3, 4, 6]))
