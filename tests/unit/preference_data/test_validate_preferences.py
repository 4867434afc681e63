"""Preference record kinds: precise reasons, dedup, length limits, kind detection, reconciling counts."""

import json
import math

import numpy as np
import pytest

from preference_data.records import PairwiseRecord, PromptRecord, RankedRecord, RatedRecord
from preference_data.validate import DataError, Rejected
from preference_data.validate_preferences import (
    KINDS,
    check_pairwise,
    check_prompt,
    check_ranked,
    check_rated,
    content_key,
    detect_kind,
    load_kind,
    longest_tokens,
)

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
S = {"role": "system", "content": "be nice"}


class WhitespaceTokenizer:
    """The transformers call convention, one token per whitespace-separated word."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[hash(word) for word in text.split()] for text in texts]}


def read_quarantine(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


def rejection(check, data):
    with pytest.raises(Rejected) as caught:
        check(data)
    return caught.value.reason, caught.value.kind


# --- accepted forms --------------------------------------------------------------------------


def test_prompt_is_text_or_a_conversation_ending_with_the_user():
    assert check_prompt({"prompt": "hi"}, "f.jsonl", 2) == PromptRecord("hi", "f.jsonl", 2)
    conversation = [S, U, A, {"role": "user", "content": "more"}]
    assert check_prompt({"prompt": conversation}).prompt == tuple(conversation)


def test_pairwise_unwraps_assistant_messages_and_normalises_numbers():
    record = check_pairwise(
        {
            "prompt": [U],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": {"role": "assistant", "content": "bad"},
            "margin": 2,
            "annotator": "ann-1",
            "group": "g",
        },
        "f.jsonl",
        4,
    )
    assert record == PairwiseRecord((U,), "good", "bad", 2.0, "ann-1", "g", "f.jsonl", 4)
    assert isinstance(record.margin, float)
    plain = check_pairwise({"prompt": "q", "chosen": "a", "rejected": "b", "margin": None, "annotator": ""})
    assert (plain.margin, plain.annotator, plain.group) == (None, None, None)


def test_ranked_and_rated_records():
    ranked = check_ranked({"prompt": "q", "responses": ["a", "b", "c"], "ranks": [1, 0, 1]}, "r.jsonl", 1)
    assert ranked == RankedRecord("q", ("a", "b", "c"), (1, 0, 1), None, "r.jsonl", 1)
    rated = check_rated({"prompt": "q", "responses": ["a", "b"], "scores": [3, 4.5]})
    assert rated.scores == (3.0, 4.5)
    attributes = check_rated(
        {"prompt": "q", "responses": ["a", "b"], "scores": [{"help": 1, "honest": 2}, {"honest": 5, "help": 4}]}
    )
    assert attributes.scores == ({"help": 1.0, "honest": 2.0}, {"honest": 5.0, "help": 4.0})
    # a single rated response is kept: regression can use it, pair transforms skip it
    assert check_rated({"prompt": "q", "responses": ["a"], "scores": [1]}).responses == ("a",)


# --- rejection reasons -----------------------------------------------------------------------

PAIR = {"prompt": "q", "chosen": "a", "rejected": "b"}


@pytest.mark.parametrize(
    "data, reason, kind",
    [
        ({"chosen": "a", "rejected": "b"}, "field 'prompt' is missing", "missing field"),
        ({"prompt": "q", "rejected": "b"}, "field 'chosen' is missing", "missing field"),
        (dict(PAIR, prompt="  "), "field 'prompt' is empty", "empty field"),
        (
            dict(PAIR, prompt=[U, A]),
            "conversation in 'prompt' must end with a user turn, got assistant",
            "bad conversation",
        ),
        (
            dict(PAIR, prompt=[A, U]),
            "conversation in 'prompt' must start with a user turn (after an optional system message), got assistant",
            "bad conversation",
        ),
        (dict(PAIR, prompt=[S]), "conversation in 'prompt' must end with a user turn, got system", "bad conversation"),
        (dict(PAIR, prompt=[U, {"role": "user", "content": ""}]), "prompt[1].content is empty", "empty field"),
        (dict(PAIR, chosen=""), "field 'chosen' is empty", "empty field"),
        (dict(PAIR, rejected=None), "field 'rejected' is empty", "empty field"),
        (dict(PAIR, chosen=[]), "field 'chosen' is empty", "empty field"),
        (dict(PAIR, chosen=3), "field 'chosen' must be a string or an assistant message, got int", "wrong type"),
        (
            dict(PAIR, chosen=[U, A]),
            "field 'chosen' must be a string or one assistant message, got a list of 2 items",
            "wrong type",
        ),
        (dict(PAIR, chosen=U), "field 'chosen' must be an assistant message, got role 'user'", "wrong type"),
        (dict(PAIR, chosen={"role": "assistant"}), "chosen.content is missing", "missing field"),
        (dict(PAIR, rejected=[{"role": "assistant", "content": " "}]), "rejected.content is empty", "empty field"),
        (dict(PAIR, chosen="same ", rejected=" same"), "chosen and rejected are identical", "identical responses"),
        (dict(PAIR, margin=float("nan")), "field 'margin' is not finite", "invalid value"),
        (dict(PAIR, margin=float("inf")), "field 'margin' is not finite", "invalid value"),
        (dict(PAIR, margin=10**400), "field 'margin' is not finite", "invalid value"),
        (dict(PAIR, margin="1"), "field 'margin' must be a number, got str", "wrong type"),
        (dict(PAIR, margin=True), "field 'margin' must be a number, got bool", "wrong type"),
        (dict(PAIR, annotator=7), "field 'annotator' must be a string, got int", "wrong type"),
        ("text", "expected a JSON object, got str", "wrong type"),
    ],
)
def test_pairwise_rejections(data, reason, kind):
    assert rejection(check_pairwise, data) == (reason, kind)


RANKED = {"prompt": "q", "responses": ["a", "b", "c", "d"], "ranks": [0, 1, 2, 3]}


@pytest.mark.parametrize(
    "data, reason, kind",
    [
        ({"prompt": "q", "responses": ["a", "b"]}, "field 'ranks' is missing", "missing field"),
        (dict(RANKED, responses="a"), "field 'responses' must be a list, got str", "wrong type"),
        (dict(RANKED, responses=[]), "field 'responses' is empty", "empty field"),
        (dict(RANKED, responses=["a"], ranks=[0]), "K < 2: need at least 2 responses", "too few responses"),
        (dict(RANKED, responses=["a", "b", "  ", "d"]), "responses[2] is empty", "empty field"),
        (
            dict(RANKED, responses=["a", "b", 3, "d"]),
            "responses[2] must be a string or an assistant message, got int",
            "wrong type",
        ),
        (dict(RANKED, responses=["a", "b", "a ", "d"]), "responses[2] duplicates responses[0]", "identical responses"),
        (dict(RANKED, ranks=[0, 1, 2]), "3 ranks for 4 responses", "count mismatch"),
        (dict(RANKED, ranks="0123"), "field 'ranks' must be a list of integers, got str", "wrong type"),
        (dict(RANKED, ranks=[0, 1.0, 2, 3]), "ranks[1] must be an integer, got float", "wrong type"),
        (dict(RANKED, ranks=[0, True, 2, 3]), "ranks[1] must be an integer, got bool", "wrong type"),
        (dict(RANKED, ranks=[0, 1, -2, 3]), "ranks[2] is negative (-2); 0 is the best rank", "invalid value"),
        (dict(RANKED, ranks=[1, 1, 1, 1]), "all ranks are equal: no preference to learn", "no preference"),
    ],
)
def test_ranked_rejections(data, reason, kind):
    assert rejection(check_ranked, data) == (reason, kind)


RATED = {"prompt": "q", "responses": ["a", "b", "c"], "scores": [1, 2, 3]}


@pytest.mark.parametrize(
    "data, reason, kind",
    [
        ({"prompt": "q", "responses": ["a"]}, "field 'scores' is missing", "missing field"),
        (dict(RATED, scores=[1, 2]), "2 scores for 3 responses", "count mismatch"),
        (dict(RATED, scores={"a": 1}), "field 'scores' must be a list, got dict", "wrong type"),
        (dict(RATED, scores=[1, float("nan"), 3]), "scores[1] is not finite", "invalid value"),
        (dict(RATED, scores=[1, 2, -math.inf]), "scores[2] is not finite", "invalid value"),
        (dict(RATED, scores=[1, "2", 3]), "scores[1] must be a number or an object of numbers, got str", "wrong type"),
        (
            dict(RATED, scores=[1, None, 3]),
            "scores[1] must be a number or an object of numbers, got null",
            "wrong type",
        ),
        (dict(RATED, scores=[{"h": 1}, {"h": float("inf")}, {"h": 2}]), "scores[1].h is not finite", "invalid value"),
        (dict(RATED, scores=[{"h": 1}, {"h": "x"}, {"h": 2}]), "scores[1].h must be a number, got str", "wrong type"),
        (dict(RATED, scores=[{"h": 1}, {}, {"h": 2}]), "scores[1] is empty", "empty field"),
        (
            dict(RATED, scores=[1, {"h": 1}, 2]),
            "scores[1] is an object but scores[0] is a number; all scores of a record must be of one kind",
            "inconsistent scores",
        ),
        (
            dict(RATED, scores=[{"h": 1}, {"h": 1, "x": 2}, {"h": 2}]),
            "scores[1] has keys h, x but scores[0] has h; all scores of a record must have the same keys",
            "inconsistent scores",
        ),
        (dict(RATED, responses=["a", "", "c"]), "responses[1] is empty", "empty field"),
        (dict(RATED, responses=["a", "b", "b"]), "responses[2] duplicates responses[1]", "identical responses"),
    ],
)
def test_rated_rejections(data, reason, kind):
    assert rejection(check_rated, data) == (reason, kind)


# --- float32 range ---------------------------------------------------------------------------

FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max, exactly
# The float32 max plus half its last step (2**104): the smallest float64 that float32 rounds to inf.
ROUNDS_TO_INF = FLOAT32_MAX + 2.0**103
JUST_ABOVE = math.nextafter(FLOAT32_MAX, math.inf)  # float32 rounds it down to the max


def beyond_float32(label, value):
    return f"{label} is {value!r}, beyond the float32 range (magnitude at most 3.4028234663852886e+38)"


def test_the_float32_edge_values_are_what_they_claim():
    with np.errstate(over="ignore"):
        assert np.float32(FLOAT32_MAX) == np.finfo(np.float32).max
        assert np.isinf(np.float32(ROUNDS_TO_INF)) and np.isinf(np.float32(1e39))
        assert np.float32(math.nextafter(ROUNDS_TO_INF, 0)) == np.finfo(np.float32).max
        assert np.float32(JUST_ABOVE) == np.finfo(np.float32).max
    assert math.isfinite(ROUNDS_TO_INF) and JUST_ABOVE > FLOAT32_MAX


@pytest.mark.parametrize("value", [1e39, -1e39, 10**39, ROUNDS_TO_INF, -ROUNDS_TO_INF, JUST_ABOVE])
def test_margins_and_scores_beyond_float32_are_rejected(value):
    number = float(value)
    assert rejection(check_pairwise, dict(PAIR, margin=value)) == (
        beyond_float32("field 'margin'", number),
        "invalid value",
    )
    assert rejection(check_rated, dict(RATED, scores=[1, value, 3])) == (
        beyond_float32("scores[1]", number),
        "invalid value",
    )
    attributes = [{"h": 1}, {"h": 2}, {"h": value}]
    assert rejection(check_rated, dict(RATED, scores=attributes)) == (
        beyond_float32("scores[2].h", number),
        "invalid value",
    )


def test_the_float32_extremes_themselves_are_accepted():
    assert check_pairwise(dict(PAIR, margin=FLOAT32_MAX)).margin == FLOAT32_MAX
    assert check_pairwise(dict(PAIR, margin=-FLOAT32_MAX)).margin == -FLOAT32_MAX
    assert check_rated(dict(RATED, scores=[-FLOAT32_MAX, 0, FLOAT32_MAX])).scores == (-FLOAT32_MAX, 0.0, FLOAT32_MAX)


def test_values_beyond_float32_are_quarantined_with_file_and_line_or_stop_strict(tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            dict(PAIR, margin=1.5),
            '{"prompt": "q", "chosen": "c", "rejected": "d", "margin": 1e39}',
            dict(PAIR, chosen="e", margin=-FLOAT32_MAX),
        ],
    )
    qpath = tmp_path / "q.jsonl"
    records, report = load_kind(path, "pairwise", quarantine_path=str(qpath))
    assert [(r.line, r.margin) for r in records] == [(1, 1.5), (3, -FLOAT32_MAX)]
    assert (report.read, report.accepted, report.rejected) == (3, 2, 1) and report.reasons == {"invalid value": 1}
    assert [(e["source"], e["line"], e["reason"]) for e in read_quarantine(qpath)] == [
        (path, 2, beyond_float32("field 'margin'", 1e39))
    ]
    with pytest.raises(DataError) as caught:
        load_kind(path, "pairwise", quarantine_path=None, strict=True)
    assert str(caught.value) == f"{path}:2: " + beyond_float32("field 'margin'", 1e39)


def test_prompt_rejections():
    assert rejection(check_prompt, {"text": "q"}) == ("field 'prompt' is missing", "missing field")
    assert rejection(check_prompt, {"prompt": 3}) == (
        "field 'prompt' must be a string or a list of messages, got int",
        "wrong type",
    )


# --- kind detection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, kind",
    [
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "pairwise"),
        ({"prompt": "q", "responses": ["a", "b"], "ranks": [0, 1]}, "ranked"),
        ({"prompt": "q", "responses": ["a"], "scores": [1]}, "rated"),
        ({"messages": [U, A]}, "sft"),
        ({"prompt": "q", "completion": "a"}, "sft"),
        ({"prompt": "q"}, "prompt"),
        ({"prompt": "q", "responses": ["a"], "scores": [1], "ranks": None}, "rated"),  # null column: absent
    ],
)
def test_detect_kind(data, kind):
    assert detect_kind(data) == kind
    assert kind in KINDS


def test_detect_kind_refuses_ambiguous_and_unknown_records():
    assert rejection(detect_kind, {"responses": [], "ranks": [], "scores": []}) == (
        "record has fields of several kinds (ranked, rated); pass the kind",
        "ambiguous format",
    )
    reason, kind = rejection(detect_kind, {"question": "q", "answer": "a"})
    assert reason.startswith("cannot tell the record kind from fields answer, question") and kind == "unknown kind"


# --- load_kind -------------------------------------------------------------------------------


def test_load_kind_quarantines_each_rejection_with_file_and_line(tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "q1", "chosen": "a", "rejected": "b"},  # 1 ok
            {"prompt": "q2", "chosen": "a", "rejected": "a"},  # 2 identical
            {"prompt": "q3", "chosen": "a", "rejected": "b", "margin": "big"},  # 3 wrong type
            '{"prompt": "q4", "chosen": "a", "rejected": "b", "margin": NaN}',  # 4 not finite
            {"prompt": "q5", "chosen": "a"},  # 5 missing
            "not json",  # 6 not valid JSON
            {"prompt": "q1", "chosen": "a", "rejected": "b"},  # 7 duplicate of 1
            {"prompt": "q1", "chosen": "a", "rejected": "b", "annotator": "x"},  # 8 ok: another annotator
        ],
    )
    qpath = tmp_path / "q.jsonl"
    records, report = load_kind(path, "pairwise", quarantine_path=str(qpath))
    assert [r.line for r in records] == [1, 8]
    assert (report.read, report.accepted, report.rejected) == (8, 2, 6)
    assert report.read == report.accepted + report.rejected
    assert report.reasons == {
        "identical responses": 1,
        "wrong type": 1,
        "invalid value": 1,
        "missing field": 1,
        "not valid JSON": 1,
        "duplicate": 1,
    }
    entries = read_quarantine(qpath)
    assert [(e["source"], e["line"]) for e in entries] == [(path, n) for n in (2, 3, 4, 5, 6, 7)]
    by_line = {e["line"]: e for e in entries}
    assert by_line[2]["reason"] == "chosen and rejected are identical"
    assert by_line[4]["reason"] == "field 'margin' is not finite"
    assert by_line[7]["reason"] == f"duplicate of {path}:1"
    assert by_line[7]["record"] == {"prompt": "q1", "chosen": "a", "rejected": "b"}
    report.to_dict()


def test_dedup_spans_files_and_can_be_turned_off(tmp_path):
    row = {"prompt": "q", "responses": ["a", "b"], "ranks": [0, 1]}
    a = write_jsonl(tmp_path / "a.jsonl", [row])
    b = write_jsonl(tmp_path / "b.jsonl", [dict(row, extra="ignored"), dict(row, ranks=[1, 0])])
    records, report = load_kind([a, b], "ranked", quarantine_path=str(tmp_path / "q.jsonl"))
    assert [(r.source, r.line) for r in records] == [(a, 1), (b, 2)]
    assert read_quarantine(tmp_path / "q.jsonl")[0]["reason"] == f"duplicate of {a}:1"
    records, report = load_kind([a, b], "ranked", quarantine_path=None, dedup=False)
    assert len(records) == 3 and report.rejected == 0


def test_content_key_ignores_position_but_not_annotator():
    record = check_pairwise(PAIR, "a.jsonl", 1)
    assert content_key(record) == content_key(check_pairwise(PAIR, "b.jsonl", 9))
    assert content_key(record) != content_key(check_pairwise(dict(PAIR, annotator="x")))
    # a plain-text prompt and the same text as a conversation are different records
    assert content_key(record) != content_key(check_pairwise(dict(PAIR, prompt=[{"role": "user", "content": "q"}])))


def test_length_limit_counts_prompt_plus_longest_response(tmp_path):
    tokenizer = WhitespaceTokenizer()
    record = check_ranked(
        {
            "prompt": [U, A, {"role": "user", "content": "two words"}],
            "responses": ["one", "three words here", "x y"],
            "ranks": [0, 1, 2],
        }
    )
    assert longest_tokens(record, tokenizer) == 1 + 1 + 2 + 3
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"prompt": "a b", "responses": ["c", "d e f"], "scores": [1, 2]},  # 2 + 3 = 5: ok
            {"prompt": "a b c", "responses": ["d", "e f g"], "scores": [1, 2]},  # 6: too long
            {"prompt": "a b c", "responses": ["d", "e f g"], "scores": [1, 2]},  # too long again, not "duplicate"
        ],
    )
    qpath = tmp_path / "q.jsonl"
    records, report = load_kind(path, "rated", quarantine_path=str(qpath), max_tokens=5, tokenizer=tokenizer)
    assert [r.line for r in records] == [1]
    assert report.reasons == {"too long": 2}
    assert [e["reason"] for e in read_quarantine(qpath)] == ["too long: 6 tokens > max_tokens 5"] * 2
    with pytest.raises(ValueError, match="give both or neither"):
        load_kind(path, "rated", quarantine_path=None, max_tokens=5)


def test_length_limit_for_sft_and_prompt_records(tmp_path):
    tokenizer = WhitespaceTokenizer()
    sft = write_jsonl(
        tmp_path / "s.jsonl", [{"prompt": "a b", "completion": "c"}, {"prompt": "a", "completion": "b c d"}]
    )
    records, report = load_kind(sft, "sft", quarantine_path=None, max_tokens=3, tokenizer=tokenizer)
    assert [r.line for r in records] == [1] and report.reasons == {"too long": 1}
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a b c"}, {"prompt": "a b c d"}])
    records, report = load_kind(prompts, "prompt", quarantine_path=None, max_tokens=3, tokenizer=tokenizer)
    assert [r.line for r in records] == [1] and report.rejected == 1


def test_auto_kind_follows_the_first_parsed_row(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            "{broken",
            {"other": 1},  # kind cannot be told: rejected
            {"prompt": "q", "responses": ["a", "b"], "scores": [1, 2]},
            {"prompt": "q", "chosen": "a", "rejected": "b"},  # not rated: rejected
        ],
    )
    records, report = load_kind(path, "auto", quarantine_path=str(tmp_path / "q.jsonl"))
    assert [type(r) for r in records] == [RatedRecord]
    assert report.reasons == {"not valid JSON": 1, "unknown kind": 1, "missing field": 1}
    assert read_quarantine(tmp_path / "q.jsonl")[-1]["reason"] == "field 'responses' is missing"


def test_strict_raises_at_the_first_rejection_and_bad_arguments_fail_early(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [PAIR, dict(PAIR, rejected="a")])
    with pytest.raises(DataError) as caught:
        load_kind(path, "pairwise", quarantine_path=None, strict=True)
    assert str(caught.value) == f"{path}:2: chosen and rejected are identical"
    with pytest.raises(DataError, match="no valid ranked records"):
        load_kind(path, "ranked", quarantine_path=None)
    with pytest.raises(ValueError, match="unknown record kind 'pairs'"):
        load_kind(path, "pairs", quarantine_path=None)
    with pytest.raises(ValueError, match="unknown adapter"):
        load_kind(path, "pairwise", quarantine_path=None, adapter="nope")
    with pytest.raises(ValueError, match="gives pairwise records, not rated"):
        load_kind(path, "rated", quarantine_path=None, adapter="hh-rlhf")


def test_load_kind_sft_matches_load_sft(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "a", "completion": "b"}, {"messages": [U, A]}])
    records, report = load_kind(path, "sft", quarantine_path=None)
    assert [r.messages for r in records] == [
        ({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}),
        (U, A),
    ]


def test_length_filter_tokenises_at_most_a_bounded_prefix_of_each_text(tmp_path):
    from preference_data.text_budget import char_budget

    seen: list[int] = []

    class Spy(WhitespaceTokenizer):
        def __call__(self, texts, add_special_tokens=False):
            seen.extend(len(t) for t in texts)
            return super().__call__(texts, add_special_tokens=add_special_tokens)

    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "a b", "chosen": "c", "rejected": "d"},
            {"prompt": "a", "chosen": "w " * 200_000, "rejected": "d"},
        ],
    )
    records, report = load_kind(path, "pairwise", quarantine_path=None, max_tokens=10, tokenizer=Spy())
    assert [r.line for r in records] == [1] and report.reasons == {"too long": 1}
    assert max(seen) <= char_budget(10)
