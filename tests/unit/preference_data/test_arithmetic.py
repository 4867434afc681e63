"""The verifiable arithmetic task: answers, held-out split, the built-in reader, the rewards, and
reward functions that take the prompt record."""

from __future__ import annotations

import operator
import re

import pytest

from preference_data.arithmetic import answer_format, arithmetic_records, exact_answer, in_test_split
from preference_data.records import PromptRecord
from preference_data.validate_preferences import Rejected, check_prompt, load_kind
from rlhf.rollout.rewards import Scorer, takes_record

QUESTION = re.compile(r"What is (\d+) ([+*-]) (\d+)\? Answer with the number only\.")
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def _parsed(record):
    a, op, b = QUESTION.fullmatch(record["prompt"]).groups()
    return int(a), op, int(b)


def test_answers_are_right_and_deterministic():
    records = arithmetic_records(300, seed=3)
    assert records == arithmetic_records(300, seed=3)
    assert records != arithmetic_records(300, seed=4)
    for record in records:
        a, op, b = _parsed(record)
        assert record["metadata"] == {"answer": str(OPERATORS[op](a, b))}
        assert 0 <= a <= 99 and 0 <= b <= 99
    assert {_parsed(r)[1] for r in records} == set(OPERATORS)


def test_the_test_split_is_held_out_of_train():
    train = {r["prompt"] for r in arithmetic_records(2000, seed=0, split="train")}
    test = {r["prompt"] for r in arithmetic_records(500, seed=1, split="test")}
    assert not train & test
    assert all(in_test_split(*_parsed({"prompt": p})) for p in test)
    share = sum(in_test_split(*_parsed(r)) for r in arithmetic_records(5000, seed=2)) / 5000
    assert 0.15 < share < 0.25
    with pytest.raises(ValueError, match="unknown split"):
        arithmetic_records(1, split="dev")


def test_the_builtin_reads_as_prompt_records_with_metadata():
    records, report = load_kind(["builtin:arithmetic-prompts?n=6&seed=1&split=test"], "prompt", quarantine_path=None)
    assert report.accepted == 6 and all(isinstance(r, PromptRecord) for r in records)
    assert [r.metadata for r in records] == [r["metadata"] for r in arithmetic_records(6, seed=1, split="test")]


def test_metadata_must_be_an_object():
    with pytest.raises(Rejected, match="'metadata' must be a JSON object"):
        check_prompt({"prompt": "hi", "metadata": [1, 2]})
    assert check_prompt({"prompt": "hi"}).metadata is None


RECORD = PromptRecord("What is 40 + 45? Answer with the number only.", "q.jsonl", 7, {"answer": "85"})


@pytest.mark.parametrize(
    ("response", "exact", "short"),
    [
        ("85", 1.0, 1.0),
        ("85.", 1.0, 1.0),
        ("40 + 45 = 85", 1.0, 0.0),
        ("84", 0.0, 1.0),
        ("", 0.0, 0.0),
        ("-3", 0.0, 1.0),
    ],
)
def test_rewards_by_hand(response, exact, short):
    assert exact_answer(RECORD.prompt, response, record=RECORD) == exact
    assert answer_format(RECORD.prompt, response, record=RECORD) == short


def test_exact_answer_names_a_record_without_an_answer():
    with pytest.raises(ValueError, match=r"q\.jsonl:3: .*metadata\.answer"):
        exact_answer("p", "1", record=PromptRecord("p", "q.jsonl", 3))
    with pytest.raises(ValueError, match="needs the prompt record"):
        exact_answer("p", "1")


def test_scorer_hands_the_record_to_the_functions_that_take_it():
    assert takes_record(exact_answer) and not takes_record(lambda prompt, response: 0.0)
    scorer = Scorer(None, ["preference_data.arithmetic:exact_answer", "preference_data.synthetic:judge"], [])
    by_source = scorer.score_by_source([RECORD.prompt] * 2, ["85", "12"], [RECORD, RECORD])
    assert by_source["preference_data.arithmetic:exact_answer"].tolist() == [1.0, 0.0]
    assert len(by_source["preference_data.synthetic:judge"]) == 2
