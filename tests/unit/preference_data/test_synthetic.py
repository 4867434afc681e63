"""The synthetic judged task: deterministic data, and a judge that ranks good replies first."""

import importlib
import random
import re

import pytest

from preference_data import synthetic
from preference_data.readers import iter_rows
from preference_data.synthetic import STYLES, corpus_lines, judge, prompt_records, reply, sft_records


def test_generators_are_deterministic_per_seed_and_differ_across_seeds():
    assert sft_records(100, seed=3) == sft_records(100, seed=3)
    assert sft_records(100, seed=3) != sft_records(100, seed=4)
    assert sft_records(100, seed=3, quality="mixed") == sft_records(100, seed=3, quality="mixed")
    assert prompt_records(100, seed=3) == prompt_records(100, seed=3)
    assert prompt_records(100, seed=3) != prompt_records(100, seed=4)
    assert corpus_lines() == corpus_lines()


def test_generators_do_not_touch_the_global_rng():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    sft_records(20, seed=1, quality="mixed")
    assert random.random() == expected


def test_record_shapes_and_quality():
    good = sft_records(300, seed=0)
    assert all(set(r) == {"prompt", "completion", "style"} and r["style"] == "good" for r in good)
    mixed = sft_records(300, seed=0, quality="mixed")
    assert {r["style"] for r in mixed} == set(STYLES)
    assert all(set(r) == {"prompt"} for r in prompt_records(10, seed=0))
    with pytest.raises(ValueError):
        sft_records(1, seed=0, quality="great")


@pytest.mark.parametrize("bad_style", ["rude", "off_topic", "rambling"])
def test_judge_ranks_good_above_each_bad_style(bad_style):
    rng = random.Random(7)
    prompts = [r["prompt"] for r in prompt_records(500, seed=11)]
    wins = sum(judge(p, reply(p, "good", rng)) > judge(p, reply(p, bad_style, rng)) for p in prompts)
    assert wins / len(prompts) >= 0.95


def test_judge_scores_the_parts_it_documents():
    prompt = "Tell me about the red fox."
    good = "Sure! The red fox is quick and clever. Hope this helps."
    assert judge(prompt, good) == 3.0
    assert judge(prompt, good) == judge(prompt, good)
    assert judge(prompt, "Ugh. Fine. The red fox is quick and clever. Go away.") == 0.0
    assert judge(prompt, "Sure! The blue cat is soft and calm. Hope this helps.") == 0.0
    assert judge(prompt, "Sure! The fox is quick and clever. Hope this helps.") == 2.0  # colour missing
    assert judge(prompt, "") == synthetic.EMPTY_SCORE
    rambling = "Sure! " + "The red fox is quick and clever. " * 4 + "Hope this helps."
    assert judge(prompt, rambling) < judge(prompt, good)
    # a chat-formatted prompt: the last object asked about counts
    assert judge("User: Tell me about the blue cat.\nUser: Tell me about the red fox.", good) == 3.0


def test_judge_is_importable_by_reference():
    module, _, name = "preference_data.synthetic:judge".partition(":")
    assert getattr(importlib.import_module(module), name) is judge


def test_corpus_covers_the_task_vocabulary():
    lines = corpus_lines()
    assert 200 <= len(lines) <= 1000
    corpus = set(re.findall(r"[a-z]+", " ".join(lines).lower()))
    generated = sft_records(1000, seed=99, quality="mixed")
    used = set(re.findall(r"[a-z]+", " ".join(r["prompt"] + " " + r["completion"] for r in generated).lower()))
    assert used <= corpus


# --- held-out split by (colour, noun) -------------------------------------------------------


def _combination(prompt):
    return synthetic.parse_prompt(prompt)


def test_split_all_is_the_output_without_split():
    # Pinned from before `split` existed: existing configs and documented numbers rely on it.
    assert [r["prompt"] for r in prompt_records(4, seed=0, split="all")] == [
        "Could you tell me about the brown fox?",
        "Describe the orange chair, please.",
        "Could you tell me about the black chair?",
        "Describe the purple owl, please.",
    ]
    assert (
        sft_records(1, seed=0, quality="mixed", split="all")[0]["completion"]
        == "Great question! The brown fox is shy and alert. It hunts at night. Thanks for asking."
    )
    assert sft_records(200, seed=5, split="all") == sft_records(200, seed=5)
    assert sft_records(200, seed=5, quality="mixed", split="all") == sft_records(200, seed=5, quality="mixed")
    assert prompt_records(200, seed=5, split="all") == prompt_records(200, seed=5)
    for name in ("judged-sft", "judged-sft-mixed", "judged-prompts"):
        with_all = [row.data for row in iter_rows(f"builtin:{name}?n=50&seed=2&split=all")]
        assert with_all == [row.data for row in iter_rows(f"builtin:{name}?n=50&seed=2")]


def test_test_combinations_follow_the_documented_rule_and_cover_every_colour_and_noun():
    combos = {(c, n) for c in synthetic.COLOURS for n in synthetic.NOUNS}
    assert len(combos) == 144 and synthetic.TEST_COMBINATIONS <= combos
    assert synthetic.TEST_COMBINATIONS == {
        (c, n)
        for c in synthetic.COLOURS
        for n in synthetic.NOUNS
        if (synthetic.COLOURS.index(c) + synthetic.NOUNS.index(n)) % 5 == 0
    }
    assert len(synthetic.TEST_COMBINATIONS) == 29  # about 20%
    train = combos - synthetic.TEST_COMBINATIONS
    for side in (synthetic.TEST_COMBINATIONS, train):
        assert {c for c, _ in side} == set(synthetic.COLOURS)
        assert {n for _, n in side} == set(synthetic.NOUNS)


def test_train_and_test_prompts_are_disjoint_and_cover_all_combinations():
    train = {_combination(r["prompt"]) for r in prompt_records(3000, seed=0, split="train")}
    test = {_combination(r["prompt"]) for r in prompt_records(1000, seed=0, split="test")}
    assert not train & test
    assert test == synthetic.TEST_COMBINATIONS
    assert len(train) == 115 and len(train | test) == 144
    assert all(
        synthetic.in_split(r["prompt"], "train") and not synthetic.in_split(r["prompt"], "test")
        for r in prompt_records(200, seed=1, split="train")
    )


def test_split_sampling_is_deterministic_per_seed():
    for split in ("train", "test"):
        assert sft_records(100, seed=3, quality="mixed", split=split) == sft_records(
            100, seed=3, quality="mixed", split=split
        )
        assert prompt_records(100, seed=3, split=split) != prompt_records(100, seed=4, split=split)


@pytest.mark.parametrize("name", ["judged-sft", "judged-sft-mixed", "judged-prompts"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_sft_and_prompt_builtins_respect_the_split(name, split):
    rows = list(iter_rows(f"builtin:{name}?n=300&seed=1&split={split}"))
    assert len(rows) == 300
    assert all(synthetic.in_split(row.data["prompt"], split) for row in rows)
    for row in rows:
        if row.data.get("style") in ("good", "rude", "rambling"):  # on topic: same combination
            assert synthetic.parse_prompt(row.data["completion"]) == _combination(row.data["prompt"])


@pytest.mark.parametrize("name", ["judged-sft", "judged-sft-mixed", "judged-prompts"])
def test_unknown_split_names_the_source_and_the_allowed_values(name):
    with pytest.raises(ValueError, match=rf"builtin:{name}: unknown split 'valid'.*all, train, test"):
        iter_rows(f"builtin:{name}?n=3&split=valid")
    with pytest.raises(ValueError, match="unknown split"):
        sft_records(3, split="eval")
    with pytest.raises(ValueError, match="unknown split"):
        synthetic.in_split("Tell me about the red fox.", "dev")
