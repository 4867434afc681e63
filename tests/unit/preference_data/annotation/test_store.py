"""preference_data.annotation.store: import validation, tokens, task order, judgements, export."""

import json
import threading

import pytest

from preference_data.annotation.agreement import merge_annotators
from preference_data.annotation.store import AnnotationError, AnnotationStore
from preference_data.validate_preferences import load_kind


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def tasks(n, k=3):
    return [
        {"id": f"t{i}", "prompt": f"Tell me about thing {i}.", "responses": [f"answer {i}.{j}" for j in range(k)]}
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path):
    s = AnnotationStore(tmp_path / "ann.db")
    yield s
    s.close()


def test_wal_and_schema_version(store):
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


def test_reopen_and_foreign_db(tmp_path):
    path = tmp_path / "ann.db"
    with AnnotationStore(path) as s:
        s.import_tasks(write(tmp_path / "t.jsonl", tasks(2)))
    with AnnotationStore(path) as s:
        assert s.progress("nobody")["tasks"] == 2
    import sqlite3

    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE x (a)")
    other.commit()
    other.close()
    with pytest.raises(AnnotationError, match="something else"):
        AnnotationStore(tmp_path / "other.db")


def test_import_default_ids_idempotent_and_conflict(store, tmp_path):
    rows = [{"prompt": "p one", "responses": ["a", "b"]}, "", {"prompt": "p two", "responses": ["c", "d", "e"]}]
    path = write(tmp_path / "tasks.jsonl", rows)
    assert store.import_tasks(path) == 2
    assert store.next_task("x")["task_id"] == "tasks.jsonl:1"
    assert store.import_tasks(path) == 0  # same ids, same content: no-op
    changed = write(tmp_path / "tasks.jsonl", [rows[0], "", {"prompt": "p two", "responses": ["c", "d"]}])
    with pytest.raises(AnnotationError, match=r"tasks\.jsonl:3.*other content") as err:
        store.import_tasks(changed)
    assert err.value.status == 409
    assert store.progress("x")["tasks"] == 2


@pytest.mark.parametrize(
    "row, message",
    [
        ("{broken", "invalid JSON"),
        ([1, 2], "expected a JSON object"),
        ({"responses": ["a", "b"]}, "'prompt' is missing"),
        ({"prompt": "p"}, "'responses' is missing"),
        ({"prompt": "p", "responses": ["a"]}, "at least 2"),
        ({"prompt": "p", "responses": ["a", "  "]}, r"responses\[1\] is empty"),
        ({"prompt": "p", "responses": ["a", 3]}, r"responses\[1\] must be"),
        ({"prompt": "p", "responses": ["a", "a "]}, "duplicates"),
        ({"prompt": "", "responses": ["a", "b"]}, "'prompt' is empty"),
        ({"id": 5, "prompt": "p", "responses": ["a", "b"]}, "'id' must be"),
        ({"prompt": "p", "responses": ["a", "b"], "extra": 1}, "unknown field"),
    ],
)
def test_bad_line_names_file_line_and_imports_nothing(store, tmp_path, row, message):
    path = write(tmp_path / "bad.jsonl", [tasks(1)[0], row])
    with pytest.raises(AnnotationError, match=message) as err:
        store.import_tasks(path)
    assert err.value.status == 400
    assert f"{path}:2:" in str(err.value) and "expected" in str(err.value)
    assert store.progress("x")["tasks"] == 0


def test_duplicate_id_in_one_file(store, tmp_path):
    t = tasks(1)[0]
    assert store.import_tasks(write(tmp_path / "a.jsonl", [t, t])) == 1
    with pytest.raises(AnnotationError, match="a2.jsonl:2") as err:
        store.import_tasks(write(tmp_path / "a2.jsonl", [{**t, "id": "new"}, {**t, "id": "new", "prompt": "other"}]))
    assert err.value.status == 409


def test_tokens_hashed_and_auth(store, tmp_path):
    token = store.add_annotator("alice")
    bob = store.add_annotator("bob")
    assert token != bob and len(token) >= 40
    assert store.authenticate(token) == "alice" and store.authenticate(bob) == "bob"
    assert store.authenticate("nope") is None and store.authenticate("") is None and store.authenticate(None) is None
    with pytest.raises(AnnotationError) as err:
        store.add_annotator("alice")
    assert err.value.status == 409
    for bad in ("", " alice", "a\nb", 3):
        with pytest.raises(AnnotationError):
            store.add_annotator(bad)
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("ann.db"))
    assert token.encode() not in data and bob.encode() not in data


def test_next_task_order_and_per_task(store, tmp_path):
    store.import_tasks(write(tmp_path / "t.jsonl", tasks(3)))
    for name in ("a", "b", "c"):
        store.add_annotator(name)
    assert store.next_task("a")["task_id"] == "t0"
    task = store.next_task("a")
    assert task == {
        "task_id": "t0",
        "prompt": "Tell me about thing 0.",
        "responses": ["answer 0.0", "answer 0.1", "answer 0.2"],
    }
    store.record_judgement("a", "t0", [0, 1, 2])
    assert store.next_task("a")["task_id"] == "t1"
    assert store.next_task("b")["task_id"] == "t1"  # t0 has its one judgement
    assert store.next_task("b", per_task=2)["task_id"] == "t0"
    store.record_judgement("b", "t0", [2, 1, 0])
    assert store.next_task("c", per_task=2)["task_id"] == "t1"
    store.record_skip("c", "t1")
    assert store.next_task("c", per_task=2)["task_id"] == "t2"
    store.record_skip("c", "t2")
    store.record_skip("c", "t2")  # no-op
    assert store.next_task("c", per_task=2) is None
    assert store.next_task("c", per_task=3)["task_id"] == "t0"
    with pytest.raises(AnnotationError):
        store.next_task("c", per_task=0)


@pytest.mark.parametrize(
    "ranks, message",
    [
        ("0,1,2", "must be a list"),
        ([0, 1], "2 ranks for 3 responses"),
        ([0, 1, 2, 3], "4 ranks for 3 responses"),
        ([0, True, 2], r"ranks\[1\] must be an integer, got bool"),
        ([0, 1.0, 2], r"ranks\[1\] must be an integer"),
        ([0, "1", 2], r"ranks\[1\] must be an integer"),
        ([0, -1, 2], "negative"),
        ([1, 1, 1], "all 3 ranks are equal"),
        (None, "must be a list"),
    ],
)
def test_rank_validation_400(store, tmp_path, ranks, message):
    store.import_tasks(write(tmp_path / "t.jsonl", tasks(1)))
    store.add_annotator("a")
    with pytest.raises(AnnotationError, match=message) as err:
        store.record_judgement("a", "t0", ranks)
    assert err.value.status == 400
    assert "expected a list of 3 integers" in str(err.value) or "skip the task" in str(err.value)
    assert store.count_judgements() == 0


def test_unknown_task_duplicate_comment_skip(store, tmp_path):
    store.import_tasks(write(tmp_path / "t.jsonl", tasks(2)))
    store.add_annotator("a")
    for call in (lambda: store.record_judgement("a", "zz", [0, 1, 2]), lambda: store.record_skip("a", "zz")):
        with pytest.raises(AnnotationError) as err:
            call()
        assert err.value.status == 404
    with pytest.raises(AnnotationError, match="unknown annotator") as err:
        store.record_judgement("ghost", "t0", [0, 1, 2])
    assert err.value.status == 400
    with pytest.raises(AnnotationError, match="comment") as err:
        store.record_judgement("a", "t0", [0, 1, 2], comment="x" * 2001)
    with pytest.raises(AnnotationError, match="comment"):
        store.record_judgement("a", "t0", [0, 1, 2], comment=5)
    out = store.record_judgement("a", "t0", (0, 0, 1), comment="x" * 2000)
    assert out["task_id"] == "t0" and out["annotator"] == "a" and out["ranks"] == [0, 0, 1] and out["created_at"]
    with pytest.raises(AnnotationError) as err:
        store.record_judgement("a", "t0", [2, 1, 0])
    assert err.value.status == 409
    with pytest.raises(AnnotationError) as err:
        store.record_skip("a", "t0")
    assert err.value.status == 409
    assert store.count_judgements() == 1


def test_progress(store, tmp_path):
    store.import_tasks(write(tmp_path / "t.jsonl", tasks(4)))
    store.add_annotator("a")
    store.add_annotator("b")
    store.record_judgement("a", "t0", [0, 1, 2])
    store.record_skip("a", "t1")
    store.record_judgement("b", "t2", [0, 1, 2])
    assert store.progress("a") == {"judged": 1, "skipped": 1, "remaining": 1, "tasks": 4, "judgements": 2}
    assert store.progress("a", per_task=2) == {"judged": 1, "skipped": 1, "remaining": 2, "tasks": 4, "judgements": 2}
    assert store.progress("b")["remaining"] == 2  # t1 (only a skipped it) and t3


def test_export_ranked_and_pairwise_load_and_merge(store, tmp_path):
    rows = tasks(2, k=3)
    rows.append({"id": "conv", "prompt": [{"role": "user", "content": "hi"}], "responses": ["x", "y"]})
    store.import_tasks(write(tmp_path / "t.jsonl", rows))
    for name in ("a", "b", "c"):
        store.add_annotator(name)
    store.record_judgement("a", "t0", [0, 1, 2])
    store.record_judgement("b", "t0", [0, 2, 1])
    store.record_judgement("c", "t0", [0, 0, 1])  # one tie
    store.record_judgement("a", "t1", [1, 0, 2])
    store.record_judgement("a", "conv", [1, 0])
    ranked = tmp_path / "out" / "ranked.jsonl"
    counts = store.export(ranked, "ranked")
    assert counts == {"kind": "ranked", "judgements": 5, "written": 5, "ties_skipped": 0}
    records, report = load_kind(str(ranked), "ranked", quarantine_path=None)
    assert (report.read, report.accepted, report.rejected) == (5, 5, 0)
    first = json.loads(ranked.read_text().splitlines()[0])
    assert first["id"] == "t0" and first["annotator"] == "a" and first["ranks"] == [0, 1, 2]
    merged, merge_report = merge_annotators(records)
    assert merge_report.items == 3 and merge_report.merged == 3
    assert merged[0].annotator == "majority(3)" and merged[0].ranks[0] == 0

    pairs_path = tmp_path / "pairs.jsonl"
    counts = store.export(pairs_path, "pairwise")
    assert counts["ties_skipped"] == 1 and counts["written"] == 3 + 3 + 2 + 3 + 1
    pairs, report = load_kind(str(pairs_path), "pairwise", quarantine_path=None)
    assert report.rejected == 0 and report.accepted == counts["written"]
    assert len({p.group for p in pairs}) == 5
    _, merge_report = merge_annotators(pairs)
    assert merge_report.records_in == counts["written"]
    assert not list(tmp_path.glob("**/*.tmp"))
    with pytest.raises(AnnotationError):
        store.export(tmp_path / "x.jsonl", "rated")


def test_concurrent_judgements(tmp_path):
    store = AnnotationStore(tmp_path / "ann.db")
    store.import_tasks(write(tmp_path / "t.jsonl", tasks(50, k=2)))
    names = [f"ann{i}" for i in range(20)]
    for name in names:
        store.add_annotator(name)
    errors = []

    def work(name):
        try:
            for i in range(50):
                store.record_judgement(name, f"t{i}", [i % 2, 1 - i % 2])
                store.next_task(name, per_task=20)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_judgements() == 1000
    store.close()
    with AnnotationStore(tmp_path / "ann.db") as again:
        assert again.count_judgements() == 1000


def test_per_task_cap_and_skip_hold_at_submit_time(store, tmp_path):
    store.import_tasks(write(tmp_path / "t.jsonl", tasks(2)))
    for name in ("a", "b", "c"):
        store.add_annotator(name)
    # all three fetched t0 while it had no judgement; only two may judge it
    assert [store.next_task(n, per_task=2)["task_id"] for n in ("a", "b", "c")] == ["t0"] * 3
    store.record_judgement("a", "t0", [0, 1, 2], per_task=2)
    store.record_judgement("b", "t0", [0, 1, 2], per_task=2)
    with pytest.raises(AnnotationError, match="already has 2 judgement") as err:
        store.record_judgement("c", "t0", [0, 1, 2], per_task=2)
    assert err.value.status == 409
    store.record_skip("c", "t1")
    with pytest.raises(AnnotationError, match="skipped") as err:
        store.record_judgement("c", "t1", [0, 1, 2], per_task=2)
    assert err.value.status == 409
    assert store.count_judgements() == 2


def test_per_task_cap_holds_under_concurrent_submits(store, tmp_path):
    store.import_tasks(write(tmp_path / "t.jsonl", tasks(1)))
    names = [f"n{i}" for i in range(8)]
    for name in names:
        store.add_annotator(name)
    barrier, outcomes = threading.Barrier(len(names)), []

    def submit(name):
        barrier.wait(5)
        try:
            store.record_judgement(name, "t0", [0, 1, 2], per_task=3)
            outcomes.append(201)
        except AnnotationError as exc:
            outcomes.append(exc.status)

    threads = [threading.Thread(target=submit, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes) == [201] * 3 + [409] * 5
    assert store.count_judgements() == 3
