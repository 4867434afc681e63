"""HH-RLHF adapter + pairwise validation on the real harmless-base test split (shared data)."""

import json
from pathlib import Path

import pytest

from preference_data.records import PairwiseRecord
from preference_data.validate_preferences import load_kind

# Next to the project checkout, never inside it: the test skips when it is absent.
HH_TEST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def test_hh_rlhf_harmless_base_test_converts_and_reconciles(tmp_path):
    if not HH_TEST.exists():
        pytest.skip(f"shared HH-RLHF data not found at {HH_TEST}")
    qpath = tmp_path / "quarantine.jsonl"
    records, report = load_kind([str(HH_TEST)], "pairwise", adapter="hh-rlhf", quarantine_path=str(qpath))
    print(report.summary())

    assert report.read == 2312
    assert report.read == report.accepted + report.rejected == len(records) + report.rejected
    assert sum(report.reasons.values()) == report.rejected
    entries = [json.loads(line) for line in open(qpath)] if qpath.exists() else []
    assert len(entries) == report.rejected
    assert all(e["source"] == str(HH_TEST) and e["line"] >= 1 for e in entries)
    for entry in entries:
        print(f"  line {entry['line']}: {entry['reason']}")

    # Nearly all rows are well formed; a handful have an empty reply or a reply that writes its
    # own "Human: ... Assistant:" turns (so the dialogues no longer share a prompt).
    assert report.accepted > 0.99 * report.read
    assert set(report.reasons) <= {"prompt mismatch", "empty field", "identical responses", "duplicate"}
    for record in records:
        assert isinstance(record, PairwiseRecord)
        assert record.prompt[-1]["role"] == "user" and record.chosen.strip() != record.rejected.strip()
        assert "\n\nHuman:" not in record.chosen and "\n\nHuman:" not in record.rejected
