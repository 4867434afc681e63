"""The annotation workbench over real loopback HTTP: status codes, isolation, load, restart."""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from preference_data.annotation.server import MAX_BODY_BYTES, make_server
from preference_data.annotation.store import AnnotationStore as Store

K = 3


def build_store(tmp_path, n_tasks, annotators, db_name="annotations.db"):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps(
                {"id": f"t{i:04d}", "prompt": f"prompt <b>{i}</b>", "responses": [f"answer {i}.{j}" for j in range(K)]}
            )
            + "\n"
            for i in range(n_tasks)
        )
    )
    store = Store(tmp_path / db_name)
    assert store.import_tasks(tasks) == n_tasks
    tokens = {name: store.add_annotator(name) for name in annotators}
    return store, tokens


class Running:
    """make_server on an ephemeral port, served from a background thread."""

    def __init__(self, store, per_task=1):
        self.server = make_server(store, port=0, per_task=per_task, quiet=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Client:
    def __init__(self, port, token=None):
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(self, method, path, body=None, headers=None, raw=None, content_type="application/json"):
        h = {}
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h["Content-Type"] = content_type
        h.update(headers or {})
        self.conn.request(method, path, body=data, headers=h)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()
        parsed = json.loads(payload) if payload and "json" in resp.getheader("Content-Type", "") else payload
        return resp.status, parsed, resp

    def judge(self, task_id, ranks=(0, 1, 2), **extra):
        return self.request("POST", "/api/judgements", {"task_id": task_id, "ranks": list(ranks), **extra})

    def close(self):
        self.conn.close()


@pytest.fixture
def env(tmp_path):
    store, tokens = build_store(tmp_path, 3, ["alice", "bob"])
    running = Running(store)
    yield store, tokens, running.port
    running.stop()


def test_page_and_static_assets_carry_security_headers(env):
    _, _, port = env
    c = Client(port)
    status, body, resp = c.request("GET", "/")
    assert status == 200 and resp.getheader("Content-Type").startswith("text/html")
    csp = resp.getheader("Content-Security-Policy")
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    assert b'src="/static/app.js"' in body and b"<script>" not in body
    for path, kind in (("/static/app.js", "javascript"), ("/static/app.css", "css")):
        status, text, resp = c.request("GET", path)
        assert status == 200 and kind in resp.getheader("Content-Type")
    assert b"innerHTML" not in text and b"textContent" in c.request("GET", "/static/app.js")[1]
    c.close()


def test_every_api_endpoint_needs_a_valid_token(env):
    _, tokens, port = env
    for token in (None, "wrong-token"):
        c = Client(port, token)
        for method, path, body in (
            ("GET", "/api/next", None),
            ("GET", "/api/progress", None),
            ("POST", "/api/judgements", {"task_id": "t0000", "ranks": [0, 1, 2]}),
            ("POST", "/api/skip", {"task_id": "t0000"}),
        ):
            status, payload, _ = c.request(method, path, body)
            assert status == 401, (token, path)
            assert "error" in payload and tokens["alice"] not in json.dumps(payload)
        c.close()
    status, *_ = Client(port, "").request("GET", "/api/next", headers={"Authorization": "Basic abc"})
    assert status == 401


def test_judge_skip_done_and_progress(env):
    store, tokens, port = env
    c = Client(port, tokens["alice"])
    status, task, _ = c.request("GET", "/api/next")
    assert status == 200 and set(task) == {"task_id", "prompt", "responses"} and len(task["responses"]) == K
    status, stored, _ = c.judge(task["task_id"], [1, 0, 2], comment="close call")
    assert status == 201
    assert stored["task_id"] == task["task_id"] and stored["annotator"] == "alice"
    assert stored["ranks"] == [1, 0, 2] and "created_at" in stored
    assert c.judge(task["task_id"])[0] == 409
    status, nxt, _ = c.request("GET", "/api/next")
    assert nxt["task_id"] != task["task_id"]
    status, body, _ = c.request("POST", "/api/skip", {"task_id": nxt["task_id"]})
    assert status == 204 and body == b""
    assert c.request("POST", "/api/skip", {"task_id": nxt["task_id"]})[0] == 204  # again: no-op
    assert c.request("POST", "/api/skip", {"task_id": task["task_id"]})[0] == 409  # judged already
    assert c.judge(c.request("GET", "/api/next")[1]["task_id"], [0, 0, 1])[0] == 201  # a tie
    status, body, _ = c.request("GET", "/api/next")
    assert status == 204 and body == b""
    status, prog, _ = c.request("GET", "/api/progress")
    assert status == 200
    assert (prog["judged"], prog["skipped"], prog["remaining"], prog["tasks"]) == (2, 1, 0, 3)
    assert store.count_judgements() == 2
    c.close()


def test_annotators_do_not_see_each_others_judgements(env):
    _, tokens, port = env
    alice, bob = Client(port, tokens["alice"]), Client(port, tokens["bob"])
    # per_task=1: alice's judgement takes t0000 out of bob's queue, but not into his counts.
    assert alice.judge("t0000")[0] == 201
    a = alice.request("GET", "/api/progress")[1]
    b = bob.request("GET", "/api/progress")[1]
    assert a["judged"] == 1 and b["judged"] == 0 and b["skipped"] == 0
    assert bob.request("GET", "/api/next")[1]["task_id"] != "t0000"
    assert bob.judge("t0001")[0] == 201
    assert alice.request("GET", "/api/progress")[1]["judged"] == 1
    alice.close(), bob.close()


def test_bad_requests_get_4xx_json_never_500(env):
    store, tokens, port = env
    c = Client(port, tokens["alice"])
    cases = [
        ({"task_id": "t0000", "ranks": [0, 1]}, 400),  # wrong length (store)
        ({"task_id": "t0000", "ranks": [0, 1, -1]}, 400),  # negative (store)
        ({"task_id": "t0000", "ranks": [1, 1, 1]}, 400),  # no preference (store)
        ({"task_id": 7, "ranks": [0, 1, 2]}, 400),
        ({"task_id": "t0000", "ranks": "1,2,3"}, 400),  # wrong type
        ({"task_id": "t0000", "ranks": [0, 1, True]}, 400),  # a bool is not a rank
        ({"task_id": "t0000", "ranks": [0.0, 1, 2]}, 400),
        ({"task_id": ["t0000"], "ranks": [0, 1, 2]}, 400),
        ({"task_id": "t0000", "ranks": [0, 1, 2], "comment": 5}, 400),
        ({"task_id": "t0000", "ranks": [0, 1, 2], "score": 1}, 400),  # unknown field
        ({"ranks": [0, 1, 2]}, 400),  # missing field
        ([0, 1, 2], 400),  # not an object
        ({"task_id": "nope", "ranks": [0, 1, 2]}, 404),  # unknown task
    ]
    for body, expected in cases:
        status, payload, _ = c.request("POST", "/api/judgements", body)
        assert status == expected, body
        assert isinstance(payload["error"], str) and "Traceback" not in payload["error"]
    assert c.request("POST", "/api/skip", {"task_id": "nope"})[0] == 404
    assert c.request("POST", "/api/skip", {"task_id": "t0000", "x": 1})[0] == 400
    assert c.request("POST", "/api/judgements", raw=b"{not json")[0] == 400
    assert c.request("POST", "/api/judgements", raw=b"\xff\xfe")[0] == 400
    assert c.request("POST", "/api/judgements", raw=b"{}", content_type="text/plain")[0] == 415
    big = json.dumps({"task_id": "t0000", "ranks": [0, 1, 2], "comment": "x" * MAX_BODY_BYTES})
    status, payload, _ = Client(port, tokens["alice"]).request("POST", "/api/judgements", raw=big.encode())
    assert status == 413 and "error" in payload
    assert c.request("GET", "/api/nothing")[0] == 404
    assert c.request("GET", "/etc/passwd")[0] == 404
    assert c.request("GET", "/api/judgements")[0] == 405
    assert c.request("DELETE", "/api/next")[0] == 405
    assert c.request("POST", "/", {"a": 1})[0] == 405
    assert store.count_judgements() == 0
    # the connection is still usable after all of that
    assert c.judge("t0000")[0] == 201
    c.close()


def test_unexpected_store_failure_is_500_without_traceback(tmp_path, capsys):
    store, tokens = build_store(tmp_path, 1, ["alice"])

    class Broken:
        def __getattr__(self, name):
            return getattr(store, name)

        def progress(self, *a, **k):
            raise RuntimeError("secret internals")

    running = Running(Broken())
    try:
        status, payload, _ = Client(running.port, tokens["alice"]).request("GET", "/api/progress")
    finally:
        running.stop()
    assert status == 500 and payload == {"error": "internal error"}
    err = capsys.readouterr().err
    assert "secret internals" in err and tokens["alice"] not in err


def _annotate_until_done(port, token, acked, stop_after=None):
    """Ask for the next task and judge it until the queue is empty (or the server goes away)."""
    c = Client(port, token)
    try:
        while stop_after is None or len(acked) < stop_after:
            status, task, _ = c.request("GET", "/api/next")
            if status == 204:
                return True
            assert status == 200
            status, stored, _ = c.judge(task["task_id"], [2, 0, 1])
            assert status == 201, stored
            acked.append((stored["annotator"], stored["task_id"]))
    except (OSError, http.client.HTTPException):
        return False  # the server was stopped under us
    finally:
        c.close()
    return False


def _pairs(db_path):
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT annotator, task_id FROM judgements").fetchall()


def test_load_20_clients_post_1000_judgements(tmp_path):
    names = [f"a{i:02d}" for i in range(20)]
    store, tokens = build_store(tmp_path, 50, names)
    running = Running(store, per_task=20)
    acked: list = []
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(20) as pool:
            done = list(pool.map(lambda n: _annotate_until_done(running.port, tokens[n], acked), names))
    finally:
        running.stop()
    elapsed = time.perf_counter() - start
    assert all(done)
    assert len(acked) == 1000 and len(set(acked)) == 1000
    assert set(acked) == {(n, f"t{i:04d}") for n in names for i in range(50)}
    assert store.count_judgements() == 1000
    assert sorted(_pairs(tmp_path / "annotations.db")) == sorted(acked)
    assert elapsed < 30, elapsed


def test_restart_loses_nothing_acknowledged(tmp_path):
    names = ["a0", "a1", "a2", "a3"]
    store, tokens = build_store(tmp_path, 30, names)
    running = Running(store, per_task=4)
    acked: list = []
    threads = [threading.Thread(target=_annotate_until_done, args=(running.port, tokens[n], acked)) for n in names]
    for t in threads:
        t.start()
    deadline = time.time() + 10
    while len(acked) < 40 and time.time() < deadline:
        time.sleep(0.005)
    running.stop()  # mid-way: clients are still posting
    for t in threads:
        t.join(10)
    assert 40 <= len(acked) < 120
    store.close()  # the old process is gone

    reopened = Store(tmp_path / "annotations.db")
    assert reopened.count_judgements() >= len(acked)
    running = Running(reopened, per_task=4)
    try:
        for n in names:
            prog = Client(running.port, tokens[n]).request("GET", "/api/progress")[1]
            assert prog["judged"] >= sum(1 for a, _ in acked if a == n)
        for n, task_id in acked:  # each acknowledged judgement is there: posting it again is 409
            assert Client(running.port, tokens[n]).judge(task_id)[0] == 409
        more: list = []
        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(lambda n: _annotate_until_done(running.port, tokens[n], more), names))
    finally:
        running.stop()
    assert reopened.count_judgements() == 120
    assert not set(acked) & set(more)
    assert sorted(_pairs(tmp_path / "annotations.db")) == sorted((n, f"t{i:04d}") for n in names for i in range(30))
