"""`rlhf annotate ...`: annotator tokens, task generation on builtin:tiny, import / export round trip."""

import json

import pytest

from preference_data.annotation.store import AnnotationStore
from preference_data.validate_preferences import load_kind
from rlhf.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_add_annotator_prints_token_last(tmp_path, capsys):
    db = str(tmp_path / "ann.db")
    assert main(["annotate", "add-annotator", "alice", "--db", db]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 2 and " " not in lines[-1]
    with AnnotationStore(db) as store:
        assert store.authenticate(lines[-1]) == "alice"
    assert main(["annotate", "add-annotator", "alice", "--db", db]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]


def test_generate_on_tiny_model(tmp_path, capsys):
    prompts = write(
        tmp_path / "prompts.jsonl", [{"prompt": f"Tell me about the {c} fox."} for c in ("red", "blue", "green")]
    )
    out = tmp_path / "tasks.jsonl"
    code = main(
        [
            "annotate",
            "generate",
            "--model",
            "builtin:tiny",
            "--prompts",
            prompts,
            "-k",
            "2",
            "--out",
            str(out),
            "--max-new-tokens",
            "6",
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    left_out = captured.err.count("left out prompt")
    assert len(rows) + left_out == 3
    for row in rows:
        assert row["id"].startswith("p") and len(row["responses"]) == 2
    with AnnotationStore(tmp_path / "ann.db") as store:
        assert store.import_tasks(out) == len(rows)
    # Same seed, same tasks.
    again = tmp_path / "again.jsonl"
    assert (
        main(
            [
                "annotate",
                "generate",
                "--model",
                "builtin:tiny",
                "--prompts",
                prompts,
                "-k",
                "2",
                "--out",
                str(again),
                "--max-new-tokens",
                "6",
                "--batch-size",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert again.read_text() == out.read_text()
    assert (
        main(["annotate", "generate", "--model", "builtin:tiny", "--prompts", prompts, "-k", "1", "--out", str(again)])
        == 2
    )
    assert "-k must be >= 2" in capsys.readouterr().err


def test_import_export_round_trip(tmp_path, capsys):
    db = str(tmp_path / "ann.db")
    tasks = write(
        tmp_path / "tasks.jsonl",
        [
            {"id": "a", "prompt": "Tell me about the owl.", "responses": ["Owls hunt at night.", "No.", "Blue."]},
            {"id": "b", "prompt": "Tell me about the cat.", "responses": ["Cats purr.", "Meh."]},
        ],
    )
    assert main(["annotate", "import", "--tasks", tasks, "--db", db]) == 0
    assert "2 new tasks" in capsys.readouterr().out
    assert main(["annotate", "import", "--tasks", tasks, "--db", db]) == 0
    assert "0 new tasks" in capsys.readouterr().out
    with AnnotationStore(db) as store:
        store.add_annotator("alice")
        store.record_judgement("alice", "a", [0, 1, 1])
        store.record_judgement("alice", "b", [0, 1])
    ranked, pairs = tmp_path / "ranked.jsonl", tmp_path / "pairs.jsonl"
    assert main(["annotate", "export", "--db", db, "--out", str(ranked), "--kind", "ranked"]) == 0
    assert main(["annotate", "export", "--db", db, "--out", str(pairs), "--kind", "pairwise"]) == 0
    assert "1 tied pairs skipped" in capsys.readouterr().out
    records, report = load_kind(str(ranked), "ranked", quarantine_path=None)
    assert report.rejected == 0 and [r.ranks for r in records] == [(0, 1, 1), (0, 1)]
    pair_records, report = load_kind(str(pairs), "pairwise", quarantine_path=None)
    assert report.rejected == 0 and len(pair_records) == 3
    bad = write(tmp_path / "bad.jsonl", [{"prompt": "p", "responses": ["only one"]}])
    assert main(["annotate", "import", "--tasks", bad, "--db", db]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad}:1:" in err[0] and "at least 2" in err[0]


def test_serve_passes_the_connection_limits_to_the_server(tmp_path, monkeypatch):
    import preference_data.annotation.server as server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda store, **kwargs: seen.update(kwargs))
    tasks = write(tmp_path / "tasks.jsonl", [{"id": "a", "prompt": "Hi?", "responses": ["Hello.", "No."]}])
    argv = ["annotate", "serve", "--tasks", tasks, "--db", str(tmp_path / "ann.db"), "--port", "0"]
    assert main([*argv, "--request-timeout", "2.5", "--max-connections", "8"]) == 0
    assert seen["request_timeout"] == 2.5 and seen["max_connections"] == 8 and seen["port"] == 0
