"""Validation: precise reasons, quarantine with file:line, reports that reconcile."""

import json

import pytest

from preference_data.records import SFTRecord
from preference_data.validate import DataError, Quarantine, Rejected, ValidationReport, check_sft, load_sft, reason_kind

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
S = {"role": "system", "content": "be nice"}


def read_quarantine(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def write_lines(path, lines):
    path.write_bytes(b"".join(line if isinstance(line, bytes) else line.encode() + b"\n" for line in lines))
    return str(path)


def test_prompt_completion_becomes_user_then_assistant():
    record = check_sft({"prompt": "hi", "completion": "hello", "extra": 1}, "f.jsonl", 3)
    assert record == SFTRecord((U, A), "f.jsonl", 3)
    assert record.prompt == (U,) and record.completion == "hello"


def test_prompt_as_conversation_prefix_and_system_field():
    prefix = [U, A, {"role": "user", "content": "more"}]
    record = check_sft({"prompt": prefix, "completion": "sure", "system": "be nice"})
    assert record.messages == (S, *prefix, {"role": "assistant", "content": "sure"})


def test_messages_form_keeps_role_and_content_only():
    record = check_sft({"messages": [dict(S), dict(U, name="x"), A]})
    assert record.messages == (S, U, A)
    # a null column of the other form (mixed csv/parquet schemas) does not count as "both"
    assert check_sft({"messages": [U, A], "prompt": None, "completion": None}).messages == (U, A)
    assert check_sft({"prompt": "hi", "completion": "hello", "messages": None, "system": ""}).messages == (U, A)


@pytest.mark.parametrize(
    "data, reason, kind",
    [
        ({"prompt": "hi"}, "field 'completion' is missing", "missing field"),
        ({"completion": "x"}, "field 'prompt' is missing", "missing field"),
        ({"other": 1}, "field 'messages' is missing (or give 'prompt' and 'completion')", "missing field"),
        ({"prompt": "hi", "completion": "  "}, "field 'completion' is empty", "empty field"),
        ({"prompt": "hi", "completion": None}, "field 'completion' is empty", "empty field"),
        ({"prompt": "", "completion": "x"}, "field 'prompt' is empty", "empty field"),
        ({"prompt": [], "completion": "x"}, "field 'prompt' is empty", "empty field"),
        (
            {"prompt": 3, "completion": "x"},
            "field 'prompt' must be a string or a list of messages, got int",
            "wrong type",
        ),
        ({"prompt": "hi", "completion": ["x"]}, "field 'completion' must be a string, got list", "wrong type"),
        ({"prompt": "hi", "completion": "x", "system": 5}, "field 'system' must be a string, got int", "wrong type"),
        (
            {"prompt": "hi", "completion": "\ud800"},
            "field 'completion' has invalid Unicode (a lone surrogate)",
            "invalid UTF-8",
        ),
        (
            {"messages": [U, A], "prompt": "hi"},
            "record has both 'messages' and 'prompt'/'completion'; give one form",
            "ambiguous format",
        ),
        (
            {"messages": [S, U, A], "system": "x"},
            "record has both a 'system' field and a system message",
            "ambiguous format",
        ),
        ({"messages": "hi"}, "field 'messages' must be a list of messages, got str", "wrong type"),
        ({"messages": []}, "field 'messages' is empty", "empty field"),
        ({"messages": None}, "field 'messages' is empty", "empty field"),
        ({"messages": [U, "hello"]}, "messages[1] must be an object with 'role' and 'content', got str", "wrong type"),
        ({"messages": [U, {"content": "x"}]}, "messages[1].role is missing", "missing field"),
        ({"messages": [U, {"role": "assistant"}]}, "messages[1].content is missing", "missing field"),
        (
            {"messages": [U, A, {"role": "bot", "content": "x"}]},
            "messages[2].role 'bot' is not one of system, user, assistant",
            "invalid value",
        ),
        ({"messages": [U, {"role": 1, "content": "x"}]}, "messages[1].role must be a string, got int", "wrong type"),
        ({"messages": [U, {"role": "assistant", "content": ""}]}, "messages[1].content is empty", "empty field"),
        (
            {"messages": [U, {"role": "assistant", "content": 7}]},
            "messages[1].content must be a string, got int",
            "wrong type",
        ),
        ({"messages": [U, S, A]}, "messages[1].role 'system' is only allowed as the first message", "bad conversation"),
        ({"messages": [S, U]}, "no assistant turn with content", "bad conversation"),
        (
            {"messages": [A, U, A]},
            "conversation must start with a user turn (after an optional system message), got assistant",
            "bad conversation",
        ),
        ({"messages": [U, A, U]}, "conversation must end with an assistant turn, got user", "bad conversation"),
        (
            {"prompt": [U, A], "completion": "x"},
            "conversation in 'prompt' must end with a user turn, got assistant",
            "bad conversation",
        ),
        ({"prompt": [U, {"role": "user"}], "completion": "x"}, "prompt[1].content is missing", "missing field"),
        (["not", "a", "dict"], "expected a JSON object, got list", "wrong type"),
    ],
)
def test_rejection_reasons_are_precise(data, reason, kind):
    with pytest.raises(Rejected) as caught:
        check_sft(data)
    assert caught.value.reason == reason
    assert caught.value.kind == kind


def test_reader_errors_have_kinds():
    assert reason_kind("not valid JSON: Expecting value at column 3") == "not valid JSON"
    assert reason_kind("invalid UTF-8: byte 0xff at offset 3") == "invalid UTF-8"
    assert reason_kind("row has 3 cells, header has 2") == "malformed row"
    assert reason_kind("prompt + completion is 900 tokens, too long for max_length 512") == "too long"
    assert reason_kind("something new") == "other"


@pytest.fixture
def messy_jsonl(tmp_path):
    (tmp_path / "data").mkdir()
    return write_lines(
        tmp_path / "data" / "messy.jsonl",
        [
            '{"prompt": "a", "completion": "b"}',  # 1 ok
            '{"prompt": "c", "completion": ""}',  # 2 empty field
            '{"prompt": "e", "completion": ',  # 3 not valid JSON
            "",  # 4 blank: not a record
            '{"prompt": "f"}',  # 5 missing field
            b'{"prompt": "caf\xff", "completion": "x"}\n',  # 6 invalid UTF-8
            "[1, 2]",  # 7 wrong type
            '{"messages": [{"role": "bot", "content": "x"}]}',  # 8 invalid value
            '{"prompt": "g", "completion": "h"}',  # 9 ok
        ],
    )


def test_load_sft_quarantines_every_rejection_with_file_and_line(messy_jsonl, tmp_path):
    qpath = tmp_path / "out" / "quarantine.jsonl"
    records, report = load_sft([messy_jsonl], quarantine_path=str(qpath))
    assert [(r.line, r.completion) for r in records] == [(1, "b"), (9, "h")]
    assert (report.read, report.accepted, report.rejected) == (8, 2, 6)
    assert report.reasons == {
        "empty field": 1,
        "not valid JSON": 1,
        "missing field": 1,
        "invalid UTF-8": 1,
        "wrong type": 1,
        "invalid value": 1,
    }
    entries = read_quarantine(qpath)
    assert len(entries) == report.rejected
    assert all(e["source"] == messy_jsonl and set(e) == {"source", "line", "reason", "record"} for e in entries)
    by_line = {e["line"]: e for e in entries}
    assert by_line[2]["reason"] == "field 'completion' is empty"
    assert by_line[2]["record"] == {"prompt": "c", "completion": ""}
    assert (
        by_line[3]["reason"].startswith("not valid JSON") and by_line[3]["record"] == '{"prompt": "e", "completion": '
    )
    assert by_line[5]["reason"] == "field 'completion' is missing"
    assert by_line[6]["reason"].startswith("invalid UTF-8")
    assert by_line[6]["record"] == '{"prompt": "caf\\xff", "completion": "x"}'  # raw text, bad byte visible
    assert by_line[7]["reason"] == "expected a JSON object, got list"
    assert by_line[8]["reason"] == "messages[0].role 'bot' is not one of system, user, assistant"
    summary = report.summary()
    assert "read 8 records" in summary and "6 rejected" in summary and str(qpath) in summary
    assert "not valid JSON" in summary and len(summary.splitlines()) > 3
    d = report.to_dict()
    assert d["read"] == d["accepted"] + d["rejected"] and sum(d["reasons"].values()) == d["rejected"]


def test_strict_raises_at_the_first_rejection_naming_file_and_line(messy_jsonl, tmp_path):
    with pytest.raises(DataError) as caught:
        load_sft([messy_jsonl], quarantine_path=str(tmp_path / "q.jsonl"), strict=True)
    assert str(caught.value) == f"{messy_jsonl}:2: field 'completion' is empty"


def test_nothing_valid_raises_with_the_summary(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ['{"prompt": "a"}', "nope"])
    qpath = tmp_path / "q.jsonl"
    with pytest.raises(DataError, match="no valid SFT records") as caught:
        load_sft(path, quarantine_path=str(qpath))
    assert "read 2 records" in str(caught.value) and "missing field" in str(caught.value)
    assert len(read_quarantine(qpath)) == 2  # still quarantined before failing


def test_clean_data_leaves_no_quarantine_file(tmp_path):
    path = write_lines(tmp_path / "ok.jsonl", ['{"prompt": "a", "completion": "b"}'])
    qpath = tmp_path / "q.jsonl"
    records, report = load_sft([path], quarantine_path=str(qpath))
    assert len(records) == 1 and report.rejected == 0 and not qpath.exists()
    assert report.to_dict()["reasons"] == {}


def test_several_sources_and_field_map(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", ['{"q": "a", "r": "b"}', '{"q": "c"}'])
    b = tmp_path / "b.csv"
    b.write_text("q,r\nd,e\n,f\n")
    qpath = tmp_path / "q.jsonl"
    records, report = load_sft([a, str(b)], field_map={"prompt": "q", "completion": "r"}, quarantine_path=str(qpath))
    assert [(r.source, r.line) for r in records] == [(a, 1), (str(b), 2)]
    assert report.sources == [a, str(b)]
    assert [(e["source"], e["line"], e["reason"]) for e in read_quarantine(qpath)] == [
        (a, 2, "field 'completion' is missing"),
        (str(b), 3, "field 'prompt' is empty"),
    ]


def test_reject_accepted_moves_a_record_and_quarantines_it(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl", ['{"prompt": "a", "completion": "b"}', '{"prompt": "c", "completion": "d"}', "x"]
    )
    qpath = tmp_path / "q.jsonl"
    records, report = load_sft([path], quarantine_path=str(qpath))
    report.reject_accepted(records[1], "prompt + completion is 700 tokens, too long for max_length 512")
    assert (report.read, report.accepted, report.rejected) == (3, 1, 2)
    assert report.reasons == {"not valid JSON": 1, "too long": 1}
    entries = read_quarantine(qpath)  # appended after load_sft closed the file
    assert entries[-1] == {
        "source": path,
        "line": 2,
        "reason": "prompt + completion is 700 tokens, too long for max_length 512",
        "record": {"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
    }
    report.to_dict()


def test_report_invariant_is_checked():
    report = ValidationReport()
    report.accept()
    report.reject("f.jsonl", 2, "field 'prompt' is missing", {})
    assert report.to_dict()["reasons"] == {"missing field": 1}
    report.read += 1
    with pytest.raises(AssertionError, match="does not reconcile"):
        report.to_dict()
    with pytest.raises(ValueError):
        ValidationReport().reject_accepted(SFTRecord((U, A), "f", 1), "too long")


def test_quarantine_truncates_per_run_and_is_lazy(tmp_path):
    qpath = tmp_path / "q.jsonl"
    qpath.write_text('{"old": "run"}\n')
    with Quarantine(str(qpath)) as q:
        q.add("f.jsonl", 1, "why", {"a": 1})
    q.add("f.jsonl", 2, "why", "raw text")  # after close: reopens in append mode
    assert [e["line"] for e in read_quarantine(qpath)] == [1, 2]
    with Quarantine(str(tmp_path / "never.jsonl")):
        pass
    assert not (tmp_path / "never.jsonl").exists()


def test_load_sft_reads_builtins():
    records, report = load_sft(["builtin:judged-sft?n=50&seed=1"], quarantine_path=None)
    assert len(records) == 50 and report.rejected == 0 and records[0].line == 1
