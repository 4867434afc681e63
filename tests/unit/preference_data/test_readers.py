"""Readers: every format gives the same rows, with the right line numbers and per-row errors."""

import csv
import gzip
import json
import subprocess
import sys

import pytest

from preference_data.readers import iter_rows

# Commas, quotes, a newline and non-ASCII text: the cases CSV quoting and decoding get wrong.
RECORDS = [
    {"prompt": "Hello, world", "completion": 'Hi "there"'},
    {"prompt": "Two\nlines", "completion": "Café ☕"},
    {"prompt": "Last", "completion": "One"},
]


def write_jsonl(path, records, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_csv(path, records, opener=open):
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def write_parquet(path, records):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=2)


def make(tmp_path, kind, records=RECORDS):
    path = (
        tmp_path
        / {
            "jsonl": "d.jsonl",
            "ndjson": "d.ndjson",
            "jsonl.gz": "d.jsonl.gz",
            "json": "d.json",
            "json-data": "d.json",
            "json.gz": "d.json.gz",
            "csv": "d.csv",
            "csv.gz": "d.csv.gz",
            "parquet": "d.parquet",
            "hf": "hf",
            "hf-dict": "hf_dict",
        }[kind]
    )
    if kind in ("jsonl", "ndjson"):
        write_jsonl(path, records)
    elif kind == "jsonl.gz":
        write_jsonl(path, records, gzip.open)
    elif kind == "json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif kind == "json-data":
        path.write_text(json.dumps({"data": records, "version": 1}), encoding="utf-8")
    elif kind == "json.gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump(records, f)
    elif kind == "csv":
        write_csv(path, records)
    elif kind == "csv.gz":
        write_csv(path, records, gzip.open)
    elif kind == "parquet":
        write_parquet(path, records)
    elif kind in ("hf", "hf-dict"):
        import datasets

        ds = datasets.Dataset.from_list(records)
        if kind == "hf-dict":
            ds = datasets.DatasetDict({"test": ds.select([0]), "train": ds})
        ds.save_to_disk(str(path))
    return str(path)


ALL_KINDS = ["jsonl", "ndjson", "jsonl.gz", "json", "json-data", "json.gz", "csv", "csv.gz", "parquet", "hf", "hf-dict"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_format_reads_the_same_records(tmp_path, kind):
    path = make(tmp_path, kind)
    rows = list(iter_rows(path))
    assert [r.data for r in rows] == RECORDS
    assert all(r.error is None and r.source == path for r in rows)
    # csv: header is line 1 and record 2 spans two physical lines (quoted newline)
    expected = {"csv": [2, 3, 5], "csv.gz": [2, 3, 5]}.get(kind, [1, 2, 3])
    assert [r.line for r in rows] == expected


def test_fmt_overrides_the_extension(tmp_path):
    path = tmp_path / "data.txt"
    write_jsonl(path, RECORDS)
    assert [r.data for r in iter_rows(str(path), fmt="jsonl")] == RECORDS
    with pytest.raises(ValueError, match="cannot tell the format"):
        iter_rows(str(path))


def test_missing_file_raises_with_the_path(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        iter_rows(missing)  # eagerly, before any iteration


def test_jsonl_bad_lines_are_rows_with_errors_and_lines_count_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        b'{"prompt": "a", "completion": "b"}\n'
        b'{"prompt": "c", "completion": "d"}\n'
        b'{"prompt": "e", "completion": \n'  # line 3: broken JSON
        b"\n"  # line 4: blank, skipped
        b"[1, 2]\n"  # line 5: not an object
        b'{"prompt": "caf\xff"}\r\n'  # line 6: invalid UTF-8
        b'{"prompt": "g", "completion": "h"}'  # line 7: no trailing newline
    )
    rows = list(iter_rows(str(path)))
    assert [r.line for r in rows] == [1, 2, 3, 5, 6, 7]
    assert [r.data for r in rows if r.error is None] == [
        {"prompt": "a", "completion": "b"},
        {"prompt": "c", "completion": "d"},
        {"prompt": "g", "completion": "h"},
    ]
    bad = {r.line: r for r in rows if r.error}
    assert bad[3].error.startswith("not valid JSON: ") and bad[3].raw == '{"prompt": "e", "completion": '
    assert bad[5].error == "expected a JSON object, got list" and bad[5].raw == "[1, 2]"
    assert bad[6].error.startswith("invalid UTF-8") and bad[6].raw == '{"prompt": "caf\\xff"}'
    assert all(r.data is None for r in bad.values())


def test_jsonl_utf8_bom_is_ignored(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes("\ufeff".encode() + b'{"prompt": "a", "completion": "b"}\n')
    assert [r.data for r in iter_rows(str(path))] == [{"prompt": "a", "completion": "b"}]


def test_json_file_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"prompt": "a"},\n{"prompt": \n]')
    (row,) = iter_rows(str(broken))
    assert row.error.startswith("not valid JSON") and row.line == 4
    scalar = tmp_path / "scalar.json"
    scalar.write_text("3")
    (row,) = iter_rows(str(scalar))
    assert "expected a JSON array of objects" in row.error
    mixed = tmp_path / "mixed.json"
    mixed.write_text('[{"prompt": "a"}, "text", {"prompt": "b"}]')
    rows = list(iter_rows(str(mixed)))
    assert [(r.line, r.error) for r in rows] == [(1, None), (2, "expected a JSON object, got str"), (3, None)]


def test_csv_nulls_bad_cells_and_bad_bytes(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(
        b"prompt,completion\n"
        b"a,\n"  # line 2: empty cell -> None
        b"b,NaN\n"  # line 3: NaN -> None
        b"\n"  # line 4: blank, skipped
        b"c,d,extra\n"  # line 5: too many cells
        b"caf\xff,e\n"  # line 6: invalid UTF-8
        b"f,g\n"
    )
    rows = list(iter_rows(str(path)))
    assert [(r.line, r.data) for r in rows if r.error is None] == [
        (2, {"prompt": "a", "completion": None}),
        (3, {"prompt": "b", "completion": None}),
        (7, {"prompt": "f", "completion": "g"}),
    ]
    bad = {r.line: r for r in rows if r.error}
    assert bad[5].error == "row has 3 cells, header has 2"
    assert bad[6].error.startswith("invalid UTF-8") and bad[6].raw == "caf\\xff,e"


def test_parquet_nan_becomes_none_across_batches(tmp_path):
    records = [{"prompt": f"p{i}", "score": float("nan") if i % 2 else 1.0} for i in range(2500)]
    path = tmp_path / "d.parquet"
    write_parquet(path, records)
    rows = list(iter_rows(str(path)))
    assert [r.line for r in rows] == list(range(1, 2501))
    assert rows[0].data == {"prompt": "p0", "score": 1.0}
    assert rows[2499].data == {"prompt": "p2499", "score": None}


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_field_map_renames_source_columns(tmp_path, kind):
    source = [{"question": r["prompt"], "answer": r["completion"], "id": i} for i, r in enumerate(RECORDS)]
    path = make(tmp_path, kind, source)
    rows = list(iter_rows(path, field_map={"prompt": "question", "completion": "answer"}))
    ids = [r.data.pop("id") for r in rows]
    assert ids == [0, 1, 2] or ids == ["0", "1", "2"]  # csv cells are strings
    assert [r.data for r in rows] == RECORDS


def test_field_map_takes_the_named_column_only(tmp_path):
    path = make(
        tmp_path, "jsonl", [{"prompt": "own", "completion": "c"}, {"question": "q", "prompt": "own", "completion": "c"}]
    )
    rows = list(iter_rows(path, field_map={"prompt": "question"}))
    assert rows[0].data == {"completion": "c"}  # no silent fallback to the 'prompt' column
    assert rows[1].data == {"prompt": "q", "completion": "c"}
    swapped = list(iter_rows(path, field_map={"prompt": "completion", "completion": "prompt"}))
    assert swapped[0].data == {"prompt": "c", "completion": "own"}


def test_builtin_rows_and_parameters():
    rows = list(iter_rows("builtin:judged-sft?n=5&seed=3"))
    assert [r.line for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].source == "builtin:judged-sft?n=5&seed=3"
    assert set(rows[0].data) >= {"prompt", "completion"}
    assert [r.data for r in iter_rows("builtin:judged-sft?n=5&seed=3")] == [r.data for r in rows]
    assert len(list(iter_rows("builtin:judged-prompts?n=7"))) == 7
    with pytest.raises(ValueError, match="unknown built-in"):
        iter_rows("builtin:nope")
    with pytest.raises(ValueError, match="bad parameters"):
        iter_rows("builtin:judged-sft?colour=red")


def test_importing_the_data_layer_pulls_in_no_torch_and_no_upper_layers():
    code = (
        "import sys, preference_data.readers, preference_data.validate, preference_data.synthetic;"
        "bad = [m for m in ('torch', 'transformers', 'rlhf', 'reward_models') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
