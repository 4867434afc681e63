"""The synthetic judged task: deterministic data, and a judge that ranks good replies first."""

import importlib
import random
import re

import pytest

from preference_data import synthetic
from preference_data.synthetic import (
    STYLES, corpus_lines, judge, prompt_records, reply, sft_records)


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
