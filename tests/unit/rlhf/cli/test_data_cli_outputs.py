"""`rlhf data validate --report` and `rlhf data convert` outputs: the report is written even when
nothing valid was read; `-` is stdout and a symlink / device output is written through."""

from __future__ import annotations

import json
import os

from rlhf.cli import data as data_cli

GOOD = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


def _report(tmp_path, content: bytes):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    report = tmp_path / "report.json"
    code = data_cli.main(["validate", str(path), "--report", str(report)])
    return code, report


def test_report_is_written_for_empty_and_binary_files(tmp_path):
    for content, read in ((b"", 0), (b"\xff\xfe\x00\x01\n\x80\x81\n", 2)):
        code, report = _report(tmp_path, content)
        assert code == 1
        written = json.loads(report.read_text())
        assert (written["read"], written["accepted"], written["rejected"]) == (read, 0, read)
        report.unlink()


def test_report_is_written_when_a_file_cannot_be_read(tmp_path):
    report = tmp_path / "report.json"
    code = data_cli.main(["validate", str(tmp_path / "missing.jsonl"), "--report", str(report)])
    assert code == 2
    written = json.loads(report.read_text())
    assert written["accepted"] == 0 and "missing.jsonl" in written["error"]


def test_convert_writes_through_a_symlink(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(GOOD) + "\n")
    target = tmp_path / "target.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert data_cli.main(["convert", str(src), str(link), "--to", "pairwise"]) == 0
    assert os.path.islink(link)
    assert [json.loads(x) for x in target.read_text().splitlines()] == [GOOD]


def test_convert_dash_writes_records_to_stdout(tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(GOOD) + "\n")
    monkeypatch.chdir(tmp_path)
    assert data_cli.main(["convert", str(src), "-", "--to", "pairwise"]) == 0
    assert not (tmp_path / "-").exists()
    out = capsys.readouterr().out
    assert [json.loads(x) for x in out.splitlines()] == [GOOD]


def test_validate_max_record_bytes_flag(tmp_path):
    path = tmp_path / "in.jsonl"
    small, big = json.dumps(GOOD), json.dumps({**GOOD, "chosen": "z" * 300})
    path.write_text(small + "\n" + big + "\n")
    report = tmp_path / "report.json"
    assert data_cli.main(["validate", str(path), "--report", str(report)]) == 0
    assert data_cli.main(["validate", str(path), "--max-record-bytes", "200", "--report", str(report)]) == 1
    assert json.loads(report.read_text())["reasons"] == {"record too large": 1}
