"""Adapters for public formats: HH-RLHF dialogues, UltraFeedback ratings, OpenAI chat messages."""

import json

import pytest

from preference_data.adapters import ADAPTERS, hh_rlhf, openai_messages, ultrafeedback
from preference_data.records import PairwiseRecord, RatedRecord
from preference_data.validate import Rejected, check_sft
from preference_data.validate_preferences import KINDS, check_pairwise, check_rated, load_kind


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def rejection(adapter, row):
    with pytest.raises(Rejected) as caught:
        adapter(row)
    return caught.value.reason, caught.value.kind


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


# --- HH-RLHF ---------------------------------------------------------------------------------

MULTI = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And times 3?\n\nAssistant:"
MULTI_ROW = {"chosen": MULTI + " 12, since 4 x 3 = 12.", "rejected": MULTI + " 7"}
SINGLE_ROW = {"chosen": "\n\nHuman: Say hi.\n\nAssistant: Hi!", "rejected": "\n\nHuman: Say hi.\n\nAssistant: No."}


def test_hh_rlhf_multi_turn_dialogue_becomes_a_conversation_prompt():
    fields = hh_rlhf(MULTI_ROW)
    assert fields == {
        "prompt": [user("What is 2+2?"), assistant("4."), user("And times 3?")],
        "chosen": "12, since 4 x 3 = 12.",
        "rejected": "7",
    }
    record = check_pairwise(fields, "hh.jsonl", 1)
    assert record.prompt == (user("What is 2+2?"), assistant("4."), user("And times 3?"))


def test_hh_rlhf_single_turn_and_missing_leading_blank_line():
    assert hh_rlhf(SINGLE_ROW) == {"prompt": [user("Say hi.")], "chosen": "Hi!", "rejected": "No."}
    bare = {name: text.removeprefix("\n\n") for name, text in SINGLE_ROW.items()}
    assert hh_rlhf(bare) == hh_rlhf(SINGLE_ROW)


@pytest.mark.parametrize(
    "row, reason, kind",
    [
        (
            {"chosen": SINGLE_ROW["chosen"], "rejected": "\n\nHuman: Say bye.\n\nAssistant: No."},
            "chosen and rejected dialogues do not share a prompt",
            "prompt mismatch",
        ),
        # the reply writes its own next turns, so its last "Assistant:" is not the shared one
        (
            {
                "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.  Human: ok?\n\nAssistant: yes",
                "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.",
            },
            "chosen and rejected dialogues do not share a prompt (the chosen reply contains another Assistant turn)",
            "prompt mismatch",
        ),
        (
            {"chosen": SINGLE_ROW["chosen"] + "\n\nHuman: thanks", "rejected": SINGLE_ROW["rejected"]},
            "chosen dialogue ends with a Human turn, not the assistant's",
            "bad conversation",
        ),
        (
            {"chosen": "\n\nHuman: Say hi.\n\nAssistant:   ", "rejected": SINGLE_ROW["rejected"]},
            "chosen final reply is empty",
            "empty field",
        ),
        (
            {"chosen": SINGLE_ROW["chosen"], "rejected": "\n\nHuman: Say hi."},
            "rejected dialogue has no assistant turn",
            "bad conversation",
        ),
        (
            {
                "chosen": "Intro\n\nHuman: Say hi.\n\nAssistant: Hi!",
                "rejected": "Intro\n\nHuman: Say hi.\n\nAssistant: No.",
            },
            "dialogue does not start with a Human turn",
            "bad conversation",
        ),
        (
            {"chosen": ["\n\nHuman: x"], "rejected": "y"},
            "field 'chosen' must be a string of HH-RLHF turns, got list",
            "wrong type",
        ),
        ({"chosen": SINGLE_ROW["chosen"]}, "field 'rejected' is missing", "missing field"),
    ],
)
def test_hh_rlhf_rejections(row, reason, kind):
    assert rejection(hh_rlhf, row) == (reason, kind)


def test_hh_rlhf_through_load_kind_quarantines_the_source_row(tmp_path):
    broken = {"chosen": SINGLE_ROW["chosen"], "rejected": "\n\nHuman: Other.\n\nAssistant: No."}
    empty_turn = {name: text.replace("4.", " ") for name, text in MULTI_ROW.items()}
    same = {"chosen": SINGLE_ROW["chosen"], "rejected": SINGLE_ROW["chosen"] + " "}
    path = write_jsonl(tmp_path / "hh.jsonl", [MULTI_ROW, SINGLE_ROW, broken, empty_turn, same])
    qpath = tmp_path / "q.jsonl"
    records, report = load_kind(path, "auto", adapter="hh-rlhf", quarantine_path=str(qpath))
    assert [type(r) for r in records] == [PairwiseRecord, PairwiseRecord]
    assert (report.read, report.accepted, report.rejected) == (5, 2, 3)
    entries = [json.loads(line) for line in open(qpath)]
    assert [(e["line"], e["reason"]) for e in entries] == [
        (3, "chosen and rejected dialogues do not share a prompt"),
        (4, "prompt[1].content is empty"),  # the checker names the turn
        (5, "chosen and rejected are identical"),
    ]
    assert entries[0]["record"] == broken  # as it was in the file, not the adapted fields


# --- UltraFeedback ---------------------------------------------------------------------------


def annotated(response, **ratings):
    return {"response": response, "annotations": {k: {"Rating": v, "Rationale": "..."} for k, v in ratings.items()}}


def test_ultrafeedback_prefers_overall_then_fine_grained_then_mean_of_ratings():
    row = {
        "instruction": "Write a haiku.",
        "completions": [
            dict(annotated("first", helpfulness="2"), overall_score=7.5, **{"fine-grained_score": 2}),
            dict(annotated("second", helpfulness="4"), **{"fine-grained_score": 4.25}),
            annotated("third", helpfulness="5", honesty="N/A", truthfulness="3"),
            {"text": "fourth", "annotations": {"helpfulness": [{"Rating": "1"}]}},  # list-wrapped dump
        ],
    }
    fields = ultrafeedback(row)
    assert fields == {
        "prompt": "Write a haiku.",
        "responses": ["first", "second", "third", "fourth"],
        "scores": [7.5, 4.25, 4.0, 1.0],
    }
    assert check_rated(fields).scores == (7.5, 4.25, 4.0, 1.0)


def test_ultrafeedback_attributes_keep_the_attributes_rated_everywhere():
    row = {
        "prompt": "q",
        "completions": [
            annotated("a", helpfulness="4", honesty="5", truthfulness="N/A"),
            annotated("b", helpfulness="2", honesty="3", truthfulness="4"),
        ],
    }
    fields = ultrafeedback(row, attributes=True)
    assert fields["scores"] == [{"helpfulness": 4.0, "honesty": 5.0}, {"helpfulness": 2.0, "honesty": 3.0}]
    assert ADAPTERS["ultrafeedback-attributes"][0](row) == fields
    assert check_rated(fields).scores[1] == {"helpfulness": 2.0, "honesty": 3.0}


@pytest.mark.parametrize(
    "row, reason, kind",
    [
        ({"completions": []}, "field 'instruction' is missing (or give 'prompt')", "missing field"),
        ({"instruction": "q"}, "field 'completions' is missing", "missing field"),
        ({"instruction": "q", "completions": "a"}, "field 'completions' must be a list, got str", "wrong type"),
        ({"instruction": "q", "completions": ["a"]}, "completions[0] must be an object, got str", "wrong type"),
        (
            {"instruction": "q", "completions": [{"overall_score": 3}]},
            "completions[0].response is missing (or give 'text')",
            "missing field",
        ),
        (
            {"instruction": "q", "completions": [annotated("a", honesty="N/A")]},
            "completions[0] has no numeric rating (no overall_score, fine-grained_score or rated annotations)",
            "missing score",
        ),
        (
            {"instruction": "q", "completions": [annotated("a", honesty="great")]},
            "completions[0].annotations.honesty.Rating 'great' is not a number",
            "invalid value",
        ),
        (
            {"instruction": "q", "completions": [{"response": "a", "annotations": {"honesty": {"Rationale": "."}}}]},
            "completions[0].annotations.honesty.Rating is missing",
            "missing field",
        ),
    ],
)
def test_ultrafeedback_rejections(row, reason, kind):
    assert rejection(ultrafeedback, row) == (reason, kind)


def test_ultrafeedback_ratings_beyond_float32_are_rejected_before_they_are_averaged():
    limit = "beyond the float32 range (magnitude at most 3.4028234663852886e+38)"
    # The mean of the two ratings is 0, which the checker would take.
    cancelling = {"instruction": "q", "completions": [annotated("a", honesty="1e39", helpfulness=-1e39)]}
    assert rejection(ultrafeedback, cancelling) == (
        f"completions[0].annotations.honesty.Rating is 1e+39, {limit}",
        "invalid value",
    )
    overall = {"instruction": "q", "completions": [{"response": "a", "overall_score": "-1e39"}]}
    assert rejection(ultrafeedback, overall) == (f"completions[0].overall_score is -1e+39, {limit}", "invalid value")
    not_finite = {"instruction": "q", "completions": [annotated("a", honesty="inf", helpfulness="4")]}
    assert rejection(ultrafeedback, not_finite) == (
        "completions[0].annotations.honesty.Rating is not finite",
        "invalid value",
    )


def test_ultrafeedback_attribute_rejection_and_checker_rejections(tmp_path):
    no_shared = {"instruction": "q", "completions": [annotated("a", honesty="5"), annotated("b", helpfulness="3")]}
    assert rejection(ADAPTERS["ultrafeedback-attributes"][0], no_shared)[1] == "missing score"
    path = write_jsonl(
        tmp_path / "uf.jsonl",
        [
            {
                "instruction": "q",
                "completions": [dict(annotated("a"), overall_score=8), dict(annotated("b"), overall_score=6)],
            },
            {
                "instruction": "q",
                "completions": [dict(annotated("a"), overall_score=8), dict(annotated("a"), overall_score=6)],
            },
            {
                "instruction": "q",
                "completions": [dict(annotated("a"), overall_score=8), dict(annotated("c"), overall_score="N/A")],
            },
        ],
    )
    records, report = load_kind(path, "rated", adapter="ultrafeedback", quarantine_path=str(tmp_path / "q.jsonl"))
    assert [type(r) for r in records] == [RatedRecord] and records[0].scores == (8.0, 6.0)
    assert report.reasons == {"identical responses": 1, "missing score": 1}


# --- OpenAI messages -------------------------------------------------------------------------


def test_openai_content_parts_are_joined_and_developer_is_system():
    row = {
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Line one."}, {"type": "text", "text": "Line two."}]},
            {"role": "assistant", "content": "Done.", "weight": 1},
        ],
        "tools": [],
    }
    record = check_sft(openai_messages(row))
    assert record.messages == (
        {"role": "system", "content": "Be brief."},
        user("Line one.\nLine two."),
        assistant("Done."),
    )
    assert row["messages"][0]["role"] == "developer"  # the source row is left as read


@pytest.mark.parametrize(
    "messages, reason, kind",
    [
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, assistant("a")],
            "messages[0].content[0] has type 'image_url': only text parts are supported",
            "unsupported content",
        ),
        (
            [user("q"), {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}],
            "messages[1] is a tool call or result: only text parts are supported",
            "unsupported content",
        ),
        (
            [user("q"), {"role": "tool", "content": "42"}],
            "messages[1] is a tool call or result: only text parts are supported",
            "unsupported content",
        ),
        (
            [{"role": "user", "content": ["plain"]}, assistant("a")],
            "messages[0].content[0] must be an object with 'type' and 'text', got str",
            "wrong type",
        ),
        (
            [{"role": "user", "content": [{"type": "text"}]}, assistant("a")],
            "messages[0].content[0].text is missing",
            "missing field",
        ),
    ],
)
def test_openai_rejections(messages, reason, kind):
    assert rejection(openai_messages, {"messages": messages}) == (reason, kind)


def test_openai_through_load_kind(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"messages": [user("q"), {"role": "assistant", "content": [{"type": "text", "text": "a"}]}]},
            {"messages": [user("q"), {"role": "assistant", "content": [{"type": "text", "text": " "}]}]},
            {"prompt": "q", "completion": "a"},
            {"messages": [user("q"), {"role": "bot", "content": "a"}]},
        ],
    )
    records, report = load_kind(path, "sft", adapter="openai", quarantine_path=str(tmp_path / "q.jsonl"))
    assert [r.messages for r in records] == [(user("q"), assistant("a"))]
    reasons = [json.loads(line)["reason"] for line in open(tmp_path / "q.jsonl")]
    assert reasons == [
        "messages[1].content is empty",
        "field 'messages' is missing",
        "messages[1].role 'bot' is not one of system, user, assistant",
    ]
    assert report.read == report.accepted + report.rejected == 4


def test_every_adapter_names_a_known_kind():
    assert all(kind in KINDS and callable(adapter) for adapter, kind in ADAPTERS.values())
