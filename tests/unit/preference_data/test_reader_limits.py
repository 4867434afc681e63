"""Rows that the readers cannot parse whole: nesting beyond the recursion limit, cut archives,
records larger than the per-record byte limit. Each becomes a quarantined row with file:line."""

from __future__ import annotations

import gzip
import json

from preference_data.readers import iter_rows
from preference_data.validate import load_records, load_sft
from preference_data.validate_preferences import load_kind

GOOD = {"prompt": "2+2?", "completion": "4"}


def test_deeply_nested_line_is_quarantined_with_file_and_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + "[" * 1001 + "\n" + json.dumps({**GOOD, "completion": "5"}) + "\n")
    quarantine = tmp_path / "q.jsonl"
    records, report = load_sft([str(path)], quarantine_path=str(quarantine))
    assert [r.line for r in records] == [1, 3]
    assert (report.read, report.accepted, report.rejected) == (3, 2, 1)
    assert report.reasons == {"nested too deep": 1}
    entry = json.loads(quarantine.read_text())
    assert (entry["source"], entry["line"]) == (str(path), 2)
    assert "nested too deep" in entry["reason"]


def test_deeply_nested_json_document_is_one_rejected_row(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 1001 + "]" * 1001)
    rows = list(iter_rows(str(path)))
    assert len(rows) == 1 and rows[0].data is None and "nested too deep" in rows[0].error


def test_truncated_gzip_keeps_read_lines_and_quarantines_the_rest(tmp_path):
    lines = "".join(json.dumps({**GOOD, "completion": str(i)}) + "\n" for i in range(200))
    blob = gzip.compress(lines.encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    rows = list(iter_rows(str(path)))
    good, bad = rows[:-1], rows[-1]
    assert 0 < len(good) < 200 and all(r.data is not None for r in good)
    assert [r.data["completion"] for r in good] == [str(i) for i in range(len(good))]
    assert bad.data is None and bad.line == len(good) + 1
    assert "truncated archive" in bad.error and str(path) in bad.error
    assert f"after line {len(good)}" in bad.error
    quarantine = tmp_path / "q.jsonl"
    records, report = load_records([str(path)], lambda d, s, n: d, quarantine_path=str(quarantine))
    assert (report.accepted, report.rejected) == (len(good), 1)
    assert report.reasons == {"truncated archive": 1}
    assert "truncated archive" in json.loads(quarantine.read_text())["reason"]


def test_record_over_the_byte_limit_is_quarantined_unparsed(tmp_path):
    big = {**GOOD, "completion": "x" * 2_000_000}
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(big) + "\n" + json.dumps({**GOOD, "completion": "5"}) + "\n")
    quarantine = tmp_path / "q.jsonl"
    records, report = load_sft([str(path)], quarantine_path=str(quarantine))
    assert [r.line for r in records] == [1, 3]
    assert report.reasons == {"record too large": 1}
    entry = json.loads(quarantine.read_text())
    size = len(json.dumps(big).encode())
    assert entry["line"] == 2 and entry["reason"] == f"record too large: {size} bytes > max_record_bytes {1 << 20}"
    assert len(entry["record"]) < 1000  # a preview, not the record
    records, report = load_sft([str(path)], quarantine_path=None, max_record_bytes=None)
    assert report.accepted == 3


def test_byte_limit_applies_to_other_formats(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "completion": "y" * 500}]))
    rows = list(iter_rows(str(path), max_record_bytes=300))
    assert rows[0].data == GOOD
    assert rows[1].data is None and rows[1].error.startswith("record too large: ")


def test_nesting_beyond_the_fixed_depth_limit_is_quarantined(tmp_path):
    # 200 levels parse, but the limit is fixed (not whatever the stack allows at the time), so
    # writing or hashing the record later cannot recurse past Python's limit.
    deep = '{"prompt": ' + "[" * 200 + "]" * 200 + ', "completion": "x"}'
    ok = '{"prompt": "a", "completion": "b", "meta": ' + "[" * 99 + "]" * 99 + "}"
    path = tmp_path / "deep.jsonl"
    path.write_text(ok + "\n" + deep + "\n")
    quarantine = tmp_path / "q.jsonl"
    records, report = load_kind([str(path)], "auto", quarantine_path=str(quarantine))
    assert len(records) == 1 and report.reasons == {"nested too deep": 1}
    entry = json.loads(quarantine.read_text())
    assert entry["line"] == 2 and entry["reason"].startswith("nested too deep: more than 100 levels")
