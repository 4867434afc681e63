"""The annotation workbench over real loopback HTTP: status codes, isolation, load, restart."""

from __future__ import annotations

import http.client
import json
import socket
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


def test_per_task_cap_holds_at_submit_and_the_loser_gets_the_next_task(tmp_path):
    store, tokens = build_store(tmp_path, 2, ["alice", "bob", "carol"])
    running = Running(store, per_task=2)
    try:
        clients = {n: Client(running.port, tokens[n]) for n in tokens}
        assert [clients[n].request("GET", "/api/next")[1]["task_id"] for n in clients] == ["t0000"] * 3
        assert clients["alice"].judge("t0000")[0] == 201
        assert clients["bob"].judge("t0000")[0] == 201
        status, payload, _ = clients["carol"].judge("t0000")
        assert status == 409 and "2 judgement" in payload["error"]
        assert payload["next"]["task_id"] == "t0001" and len(payload["next"]["responses"]) == K
        assert clients["carol"].request("POST", "/api/skip", {"task_id": "t0001"})[0] == 204
        status, payload, _ = clients["carol"].judge("t0001")
        assert status == 409 and "skipped" in payload["error"] and payload["next"] is None
        for c in clients.values():
            c.close()
    finally:
        running.stop()
    assert sorted(_pairs(tmp_path / "annotations.db")) == [("alice", "t0000"), ("bob", "t0000")]


def test_deep_nesting_and_lone_surrogates_are_400(env):
    store, tokens, port = env
    c = Client(port, tokens["alice"])
    bodies = [
        b"[" * 20_000,
        b'{"task_id": "t0000", "ranks": [0, 1, 2], "comment": ' + b"[" * 20_000 + b"}",
        b'{"task_id": "t0000", "ranks": [0, 1, 2], "comment": "bad \\ud800 text"}',
        b'{"task_id": "t\\udfff", "ranks": [0, 1, 2]}',
        b'{"task_id": "t0000", "ranks": [0, 1, 2], "\\ud800": 1}',
    ]
    for raw in bodies:
        status, payload, _ = c.request("POST", "/api/judgements", raw=raw)
        assert status == 400, raw[:60]
        assert "nested" in payload["error"] or "surrogate" in payload["error"]
    status, payload, _ = c.request("POST", "/api/skip", raw=b'{"task_id": "\\ud800"}')
    assert status == 400 and "task_id" in payload["error"]
    assert store.count_judgements() == 0
    assert c.judge("t0000")[0] == 201  # the connection is still in sync
    c.close()


def _recv_until_closed(sock, limit_s):
    """Bytes the server sends until it closes the connection; None if it is still open after limit_s."""
    sock.settimeout(limit_s)
    data = b""
    try:
        while len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return data
    return data


def test_slow_clients_are_cut_off_and_connections_are_bounded(tmp_path):
    store, tokens = build_store(tmp_path, 3, ["alice"])
    server = make_server(store, port=0, quiet=True, request_timeout=0.4, max_connections=4, busy_wait=0.05)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    slow = []
    try:
        # slowloris: unfinished headers, then an unfinished body, on every connection slot
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            if i % 2:
                s.sendall(b"GET /api/progress HTTP/1.1\r\nHost: x\r\n")
            else:
                s.sendall(
                    b"POST /api/skip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    + tokens["alice"].encode()
                    + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
                )
            slow.append(s)
        time.sleep(0.1)
        # every slot is taken: a new connection is answered 503 at once
        start = time.perf_counter()
        extra = socket.create_connection(("127.0.0.1", port), timeout=2)
        extra.sendall(b"GET /api/progress HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _recv_until_closed(extra, 2)
        extra.close()
        assert answer is not None and answer.startswith(b"HTTP/1.1 503"), answer
        head, body = answer.split(b"\r\n\r\n", 1)
        assert f"Content-Length: {len(body)}".encode() in head and "busy" in json.loads(body)["error"]
        assert time.perf_counter() - start < 1
        # the slow connections are closed once the read timeout passes
        for s in slow:
            assert _recv_until_closed(s, 3) is not None
        # and a real request is served again
        status, prog, _ = Client(port, tokens["alice"]).request("GET", "/api/progress")
        assert status == 200 and prog["tasks"] == 3
    finally:
        for s in slow:
            s.close()
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert store.count_judgements() == 0


def test_50_clients_connecting_at_once_are_all_served(tmp_path):
    names = [f"a{i:02d}" for i in range(50)]
    store, tokens = build_store(tmp_path, 1, names)
    running = Running(store)
    barrier = threading.Barrier(50)

    def one(name):
        barrier.wait(5)
        try:
            return Client(running.port, tokens[name]).request("GET", "/api/progress")[0]
        except OSError as exc:
            return type(exc).__name__

    try:
        with ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(one, names))
    finally:
        running.stop()
    assert statuses == [200] * 50


def test_keep_alive_responses_are_one_write_without_nagle(env, monkeypatch):
    import socketserver

    _, tokens, port = env
    writes, nodelay = [], []
    real_write = socketserver._SocketWriter.write

    def spy(self, data):
        writes.append(bytes(data))
        nodelay.append(self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return real_write(self, data)

    monkeypatch.setattr(socketserver._SocketWriter, "write", spy)
    c = Client(port, tokens["alice"])
    start = time.perf_counter()
    for _ in range(20):
        assert c.request("GET", "/api/progress")[0] == 200
    assert c.request("GET", "/api/next")[0] == 200
    elapsed = time.perf_counter() - start
    c.close()
    assert len(writes) == 21 and all(w.startswith(b"HTTP/1.1 200") and w.endswith(b"}") for w in writes)
    assert all(nodelay)
    assert elapsed / 21 < 0.02, elapsed


def test_listen_backlog_holds_50_pending_connections(tmp_path):
    store, _ = build_store(tmp_path, 1, ["alice"])
    server = make_server(store, port=0, quiet=True)  # not accepting yet: the kernel queues them
    port, pending = server.server_address[1], []
    try:
        for _ in range(50):
            s = socket.socket()
            s.settimeout(0.5)
            s.connect(("127.0.0.1", port))  # a full backlog drops the handshake: connect times out
            pending.append(s)
    except TimeoutError:
        pass
    finally:
        for s in pending:
            s.close()
        server.server_close()
    assert len(pending) == 50
