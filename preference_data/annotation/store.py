"""Storage of an annotation workbench: tasks to rank, annotators, judgements and skips (SQLite).

A *task* is one prompt with K >= 2 responses; an annotator *judges* it by giving one rank per
response (0 = best, equal ranks tie) or *skips* it. The store is the single source of truth for
the HTTP server (`preference_data.annotation.server`) and the `rlhf annotate` CLI; `export` turns the
judgements into ranked or pairwise records that `load_kind` accepts without a rejection.

The database runs in WAL mode with `synchronous=FULL`, so a judgement is on disk when
`record_judgement` returns. One connection, guarded by a lock, serves every thread.
Tokens are never stored: only their SHA-256 hex digest.

Every bad input raises `AnnotationError` with an HTTP-like `status` (400 bad input, 404 unknown
task, 409 duplicate / conflict) and a message meant for the user.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
from datetime import datetime, timezone

from preference_data.annotation.tasks import AnnotationError, check_task, content_digest, jsonable_prompt
from preference_data.readers import type_name
from preference_data.records import RankedRecord

SCHEMA_VERSION = 1
MAX_COMMENT = 2000
MAX_NAME = 100

_SCHEMA = """
CREATE TABLE tasks (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,   -- import order
    id         TEXT NOT NULL UNIQUE,
    prompt     TEXT NOT NULL,                       -- JSON: a string or a list of messages
    responses  TEXT NOT NULL,                       -- JSON list of strings
    digest     TEXT NOT NULL,                       -- sha256 of prompt + responses (re-import check)
    source     TEXT NOT NULL,                       -- file:line it was imported from
    created_at TEXT NOT NULL
);
CREATE TABLE annotators (
    name       TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,                -- sha256(token) hex; the token itself is never kept
    created_at TEXT NOT NULL
);
CREATE TABLE judgements (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    TEXT NOT NULL REFERENCES tasks(id),
    annotator  TEXT NOT NULL REFERENCES annotators(name),
    ranks      TEXT NOT NULL,                       -- JSON list of ints, one per response
    comment    TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (task_id, annotator)
);
CREATE TABLE skips (
    task_id    TEXT NOT NULL REFERENCES tasks(id),
    annotator  TEXT NOT NULL REFERENCES annotators(name),
    created_at TEXT NOT NULL,
    PRIMARY KEY (task_id, annotator)
);
CREATE INDEX judgements_task ON judgements(task_id);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AnnotationStore:
    """Tasks, annotators, judgements and skips in one SQLite file (see the module docstring)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise AnnotationError(f"{self.path}: folder {folder} does not exist", 400)
        self._lock = threading.Lock()
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise AnnotationError(f"{self.path}: not a usable annotation database ({err})", 400) from None
        self._conn = conn
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables:
                conn.close()
                raise AnnotationError(
                    f"{self.path}: an SQLite database of something else (tables but no annotation schema version)", 400
                )
            with self._transaction():
                conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
        elif version != SCHEMA_VERSION:
            conn.close()
            raise AnnotationError(
                f"{self.path}: annotation schema version {version}, this code reads version {SCHEMA_VERSION}", 400
            )

    # --- plumbing ----------------------------------------------------------------------------

    class _Tx:
        def __init__(self, store, begin: bool):
            self.store, self.begin = store, begin

        def __enter__(self):
            self.store._lock.acquire()
            if self.begin:
                self.store._conn.execute("BEGIN IMMEDIATE")
            return self.store._conn

        def __exit__(self, exc_type, exc, tb):
            try:
                if self.begin:
                    self.store._conn.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.store._lock.release()
            return False

    def _transaction(self, begin: bool = False):
        """The lock, and with begin=True one write transaction (committed on success)."""
        return AnnotationStore._Tx(self, begin)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _task_row(self, conn, task_id):
        if not isinstance(task_id, str):
            raise AnnotationError(f"task_id must be a string, got {type_name(task_id)}", 400)
        row = conn.execute("SELECT id, prompt, responses FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise AnnotationError(f"unknown task {task_id!r}", 404)
        return row

    def _check_annotator(self, conn, annotator) -> None:
        if (
            not isinstance(annotator, str)
            or conn.execute("SELECT 1 FROM annotators WHERE name = ?", (annotator,)).fetchone() is None
        ):
            raise AnnotationError(f"unknown annotator {annotator!r}", 400)

    # --- tasks -------------------------------------------------------------------------------

    def import_tasks(self, tasks_path) -> int:
        """Import a tasks jsonl file in one transaction; returns the number of new tasks."""
        tasks_path = os.fspath(tasks_path)
        name = os.path.basename(tasks_path)
        try:
            with open(tasks_path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            raise AnnotationError(f"{tasks_path}: no such file", 400) from None
        except UnicodeDecodeError as err:
            raise AnnotationError(f"{tasks_path}: not UTF-8 text ({err.reason})", 400) from None
        parsed: list[tuple[str, object, tuple[str, ...], str]] = []
        seen: dict[str, tuple[str, str]] = {}
        for number, text in enumerate(lines, start=1):
            where = f"{tasks_path}:{number}"
            if not text.strip():
                continue  # a blank line is not a record
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise AnnotationError(
                    f"{where}: invalid JSON ({err.msg}, column {err.colno}); expected one "
                    'JSON object per line: {"id"?, "prompt", "responses"}',
                    400,
                ) from None
            task_id, prompt, responses = check_task(data, where)
            task_id = task_id if task_id is not None else f"{name}:{number}"
            prompt = jsonable_prompt(prompt)
            digest = content_digest(prompt, responses)
            if task_id in seen:
                if seen[task_id][0] != digest:
                    raise AnnotationError(
                        f"{where}: task id {task_id!r} already given with other content at {seen[task_id][1]}", 409
                    )
                continue
            seen[task_id] = (digest, where)
            parsed.append((task_id, prompt, responses, digest, where))
        added = 0
        with self._transaction(begin=True) as conn:
            for task_id, prompt, responses, digest, where in parsed:
                row = conn.execute("SELECT digest, source FROM tasks WHERE id = ?", (task_id,)).fetchone()
                if row is not None:
                    if row[0] != digest:
                        raise AnnotationError(
                            f"{where}: task {task_id!r} is already in the database with other "
                            f"content (imported from {row[1]})",
                            409,
                        )
                    continue
                conn.execute(
                    "INSERT INTO tasks (id, prompt, responses, digest, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        task_id,
                        json.dumps(prompt, ensure_ascii=False),
                        json.dumps(list(responses), ensure_ascii=False),
                        digest,
                        where,
                        _now(),
                    ),
                )
                added += 1
        return added

    # --- annotators --------------------------------------------------------------------------

    def add_annotator(self, name) -> str:
        """A new annotator; returns its token (shown once: only its SHA-256 is stored)."""
        if not isinstance(name, str) or not name.strip():
            raise AnnotationError(f"annotator name must be a non-empty string, got {name!r}", 400)
        if name != name.strip() or len(name) > MAX_NAME or any(not c.isprintable() for c in name):
            raise AnnotationError(
                f"annotator name {name!r} must be printable, without leading or trailing "
                f"spaces, at most {MAX_NAME} characters",
                400,
            )
        token = secrets.token_urlsafe(32)
        with self._transaction(begin=True) as conn:
            if conn.execute("SELECT 1 FROM annotators WHERE name = ?", (name,)).fetchone():
                raise AnnotationError(f"annotator {name!r} already exists", 409)
            conn.execute(
                "INSERT INTO annotators (name, token_hash, created_at) VALUES (?, ?, ?)",
                (name, _hash_token(token), _now()),
            )
        return token

    def authenticate(self, token) -> str | None:
        """The annotator whose token this is, or None."""
        if not isinstance(token, str) or not token:
            return None
        with self._transaction() as conn:
            row = conn.execute("SELECT name FROM annotators WHERE token_hash = ?", (_hash_token(token),)).fetchone()
        return row[0] if row else None

    # --- work --------------------------------------------------------------------------------

    _AVAILABLE = """
        FROM tasks t
        WHERE NOT EXISTS (SELECT 1 FROM judgements j WHERE j.task_id = t.id AND j.annotator = :me)
          AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.task_id = t.id AND s.annotator = :me)
          AND (SELECT count(*) FROM judgements j WHERE j.task_id = t.id) < :per_task
    """

    @staticmethod
    def _per_task(per_task) -> int:
        if isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1:
            raise AnnotationError(f"per_task must be an integer >= 1, got {per_task!r}", 400)
        return per_task

    def next_task(self, annotator, per_task: int = 1) -> dict | None:
        """The first task (import order) this annotator has neither judged nor skipped and that has
        fewer than `per_task` judgements; None when there is none."""
        per_task = self._per_task(per_task)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT t.id, t.prompt, t.responses " + self._AVAILABLE + " ORDER BY t.seq LIMIT 1",
                {"me": annotator, "per_task": per_task},
            ).fetchone()
        if row is None:
            return None
        return {"task_id": row[0], "prompt": json.loads(row[1]), "responses": json.loads(row[2])}

    def record_judgement(self, annotator, task_id, ranks, comment=None, per_task: int | None = None) -> dict:
        """Store one annotator's ranks of one task (committed before returning).

        Refused with 409 when this annotator has judged or skipped the task, or (with `per_task`)
        when the task already holds `per_task` judgements; the checks and the insert share one
        write transaction, so concurrent submits cannot pass the cap."""
        if per_task is not None:
            per_task = self._per_task(per_task)
        if comment is not None:
            if not isinstance(comment, str):
                raise AnnotationError(f"comment must be a string or null, got {type_name(comment)}", 400)
            if len(comment) > MAX_COMMENT:
                raise AnnotationError(f"comment is {len(comment)} characters; at most {MAX_COMMENT}", 400)
        with self._transaction(begin=True) as conn:
            self._check_annotator(conn, annotator)
            row = self._task_row(conn, task_id)
            k = len(json.loads(row[2]))
            expected = f"expected a list of {k} integers >= 0, one per response (0 = best, equal ranks tie)"
            if not isinstance(ranks, (list, tuple)):
                raise AnnotationError(f"ranks must be a list, got {type_name(ranks)}; {expected}", 400)
            if len(ranks) != k:
                raise AnnotationError(f"{len(ranks)} ranks for {k} responses; {expected}", 400)
            for i, rank in enumerate(ranks):
                if isinstance(rank, bool) or not isinstance(rank, int):
                    raise AnnotationError(f"ranks[{i}] must be an integer, got {type_name(rank)}; {expected}", 400)
                if rank < 0:
                    raise AnnotationError(f"ranks[{i}] is negative ({rank}); {expected}", 400)
            if len(set(ranks)) == 1:
                # A judgement that prefers nothing is not a preference record (load_kind refuses it);
                # the annotator should skip the task instead.
                raise AnnotationError(
                    f"all {k} ranks are equal: no preference; rank at least one response "
                    "above another, or skip the task",
                    400,
                )
            ranks = [int(r) for r in ranks]
            if conn.execute(
                "SELECT 1 FROM judgements WHERE task_id = ? AND annotator = ?", (task_id, annotator)
            ).fetchone():
                raise AnnotationError(f"{annotator!r} has already judged task {task_id!r}", 409)
            if conn.execute("SELECT 1 FROM skips WHERE task_id = ? AND annotator = ?", (task_id, annotator)).fetchone():
                raise AnnotationError(f"{annotator!r} has skipped task {task_id!r}; it cannot be judged", 409)
            if per_task is not None:
                count = conn.execute("SELECT count(*) FROM judgements WHERE task_id = ?", (task_id,)).fetchone()[0]
                if count >= per_task:
                    raise AnnotationError(
                        f"task {task_id!r} already has {count} judgement(s), the most it takes (annotators per task)",
                        409,
                    )
            created = _now()
            try:
                conn.execute(
                    "INSERT INTO judgements (task_id, annotator, ranks, comment, created_at) VALUES (?, ?, ?, ?, ?)",
                    (task_id, annotator, json.dumps(ranks), comment, created),
                )
            except sqlite3.IntegrityError:
                raise AnnotationError(f"{annotator!r} has already judged task {task_id!r}", 409) from None
        return {"task_id": task_id, "annotator": annotator, "ranks": ranks, "created_at": created}

    def record_skip(self, annotator, task_id) -> None:
        """The task is not offered to this annotator again (skipping twice is a no-op)."""
        with self._transaction(begin=True) as conn:
            self._check_annotator(conn, annotator)
            self._task_row(conn, task_id)
            if conn.execute(
                "SELECT 1 FROM judgements WHERE task_id = ? AND annotator = ?", (task_id, annotator)
            ).fetchone():
                raise AnnotationError(f"{annotator!r} has already judged task {task_id!r}; it cannot be skipped", 409)
            conn.execute(
                "INSERT OR IGNORE INTO skips (task_id, annotator, created_at) VALUES (?, ?, ?)",
                (task_id, annotator, _now()),
            )

    def progress(self, annotator, per_task: int = 1) -> dict:
        per_task = self._per_task(per_task)
        with self._transaction() as conn:
            one = lambda sql, *args: conn.execute(sql, args).fetchone()[0]  # noqa: E731
            judged = one("SELECT count(*) FROM judgements WHERE annotator = ?", annotator)
            skipped = one("SELECT count(*) FROM skips WHERE annotator = ?", annotator)
            remaining = conn.execute(
                "SELECT count(*) " + self._AVAILABLE, {"me": annotator, "per_task": per_task}
            ).fetchone()[0]
            tasks = one("SELECT count(*) FROM tasks")
            judgements = one("SELECT count(*) FROM judgements")
        return {"judged": judged, "skipped": skipped, "remaining": remaining, "tasks": tasks, "judgements": judgements}

    def count_judgements(self) -> int:
        with self._transaction() as conn:
            return conn.execute("SELECT count(*) FROM judgements").fetchone()[0]

    # --- export ------------------------------------------------------------------------------

    def _ranked_records(self) -> list[tuple[str, RankedRecord]]:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT j.id, j.task_id, t.prompt, t.responses, j.ranks, j.annotator FROM judgements j "
                "JOIN tasks t ON t.id = j.task_id ORDER BY t.seq, j.id"
            ).fetchall()
        out = []
        for jid, task_id, prompt, responses, ranks, annotator in rows:
            prompt = json.loads(prompt)
            prompt = prompt if isinstance(prompt, str) else tuple(prompt)
            # source:line = task id : judgement number, so each judgement's pairs share one group.
            record = RankedRecord(
                prompt, tuple(json.loads(responses)), tuple(json.loads(ranks)), annotator, source=task_id, line=jid
            )
            out.append((task_id, record))
        return out

    def export(self, out_path, kind: str) -> dict:
        """Write every judgement as ranked records (one per judgement, with the task "id") or as
        pairwise records (`ranked_to_pairwise`: ties skipped, `group` per judgement), atomically.
        Returns {"kind", "judgements", "written", "ties_skipped"}."""
        from preference_data.transforms import ranked_to_pairwise
        from preference_data.writers import record_to_dict, write_jsonl

        if kind not in ("ranked", "pairwise"):
            raise AnnotationError(f"export kind must be 'ranked' or 'pairwise', got {kind!r}", 400)
        records = self._ranked_records()
        ties = 0
        if kind == "ranked":
            rows = [{**record_to_dict(r), "id": task_id} for task_id, r in records]
        else:
            pairs, report = ranked_to_pairwise(r for _, r in records)
            rows, ties = pairs, report.ties_skipped
        written = write_jsonl(rows, os.fspath(out_path))
        return {"kind": kind, "judgements": len(records), "written": written, "ties_skipped": ties}
