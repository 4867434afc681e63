"""`rlhf data ...`: exit codes, reports, quarantine, conversions, split, merge."""

import json

import pytest

from rlhf.cli.main import main


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


GOOD = {"prompt": "Tell me about the red fox.", "chosen": "Sure! The red fox is quick.", "rejected": "Go away."}


def test_validate_exit_codes_report_and_quarantine(tmp_path, capsys):
    clean = write(tmp_path / "clean.jsonl", [GOOD, {**GOOD, "prompt": "Tell me about the owl."}])
    assert main(["data", "validate", clean]) == 0
    bad = write(
        tmp_path / "bad.jsonl",
        [
            GOOD,
            {**GOOD, "rejected": GOOD["chosen"]},
            "{broken",
            {"prompt": "p", "chosen": "a"},
            GOOD,
        ],
    )
    quarantine, report = tmp_path / "q.jsonl", tmp_path / "r.json"
    code = main(
        ["data", "validate", bad, "--kind", "pairwise", "--quarantine", str(quarantine), "--report", str(report)]
    )
    assert code == 1
    data = json.loads(report.read_text())
    assert (data["read"], data["accepted"], data["rejected"]) == (5, 1, 4)
    assert sum(data["reasons"].values()) == 4
    lines = {q["line"]: q["reason"] for q in map(json.loads, quarantine.read_text().splitlines())}
    assert set(lines) == {2, 3, 4, 5}
    assert "identical" in lines[2] and "JSON" in lines[3] and "rejected" in lines[4] and "duplicate of" in lines[5]
    out = capsys.readouterr().out
    assert "1 accepted, 4 rejected" in out
    assert main(["data", "validate", str(tmp_path / "missing.jsonl")]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["data", "validate", clean, "--kind", "nonsense"])
    assert usage.value.code == 2


def test_field_map_and_adapter(tmp_path):
    mapped = write(tmp_path / "m.jsonl", [{"question": "Q?", "good": "Yes.", "bad": "No."}])
    assert (
        main(["data", "validate", mapped, "--map", "prompt=question", "--map", "chosen=good", "--map", "rejected=bad"])
        == 0
    )
    hh = write(
        tmp_path / "hh.jsonl",
        [{"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}],
    )
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", hh, str(out), "--from", "hh-rlhf", "--to", "pairwise"]) == 0
    record = json.loads(out.read_text())
    assert record["prompt"] == [{"role": "user", "content": "Hi?"}] and record["chosen"] == "Hello!"


def test_convert_ranked_to_pairwise_and_back_through_validation(tmp_path):
    ranked = write(
        tmp_path / "ranked.jsonl", [{"prompt": "p", "responses": ["a", "b", "c", "d"], "ranks": [0, 1, 1, 2]}]
    )
    pairs = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", ranked, str(pairs), "--to", "pairwise"]) == 0
    rows = [json.loads(ln) for ln in pairs.read_text().splitlines()]
    assert len(rows) == 5 and all(r["group"] == rows[0]["group"] for r in rows)  # one tie skipped
    assert main(["data", "validate", str(pairs)]) == 0
    assert main(["data", "convert", ranked, str(tmp_path / "x.jsonl"), "--to", "rated"]) == 2


def test_split_and_merge_annotators(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "split",
                "builtin:judged-pairwise?n=200",
                "--eval-fraction",
                "0.25",
                "--out-dir",
                str(tmp_path / "split"),
            ]
        )
        == 0
    )
    train = [json.loads(ln)["prompt"] for ln in (tmp_path / "split" / "train.jsonl").read_text().splitlines()]
    evaluation = [json.loads(ln)["prompt"] for ln in (tmp_path / "split" / "eval.jsonl").read_text().splitlines()]
    assert len(train) + len(evaluation) == 200 and not set(train) & set(evaluation)
    capsys.readouterr()
    assert (
        main(
            [
                "data",
                "merge-annotators",
                "builtin:judged-pairwise?n=50&annotators=3&noise=10",
                "--out",
                str(tmp_path / "merged.jsonl"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 50 and summary["agreement"]["method"] == "fleiss"
    assert len((tmp_path / "merged.votes.jsonl").read_text().splitlines()) == 50


def test_stats_counts_pii_and_duplicates(tmp_path, capsys):
    path = write(
        tmp_path / "s.jsonl",
        [
            {**GOOD, "chosen": "Mail me at jane@example.com"},
            GOOD,
            GOOD,
        ],
    )
    assert main(["data", "stats", path]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == 3 and stats["duplicates"]["exact"] == 1 and stats["pii"] == {"EMAIL": 1}
