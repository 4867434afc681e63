"""Load on the annotation workbench over loopback: C concurrent annotators post N judgements.

    .venv/bin/python scripts/bench/bench_annotate.py [--clients 50] [--judgements 1000]
        [--fresh-connections] [--server path/to/server.py]

Each client holds one keep-alive connection (or, with --fresh-connections, opens one per
request) and loops GET /api/next, POST /api/judgements. Prints the latency p50 / p99 of the
POSTs, the wall time, the requests that failed (a reset, a timeout, a status other than the
expected) and the judgements lost: acknowledged with 201 but not in the database (0 expected).
`--server` loads `make_server` from another copy of server.py, to compare two versions.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from preference_data.annotation.store import AnnotationStore  # noqa: E402


def load_make_server(path: str | None):
    if path is None:
        from preference_data.annotation.server import make_server

        return make_server
    spec = importlib.util.spec_from_file_location("bench_annotate_server", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_server


def annotate(port: int, token: str, fresh: bool, latencies: list, acked: list, failures: list) -> None:
    conn = None

    def call(method, path, body=None):
        nonlocal conn
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()

    while True:
        try:
            status, payload = call("GET", "/api/next")
            if status == 204:
                break
            if status != 200:
                failures.append(f"GET /api/next {status}")
                break
            task_id = json.loads(payload)["task_id"]
            start = time.perf_counter()
            status, payload = call("POST", "/api/judgements", {"task_id": task_id, "ranks": [1, 0, 2]})
            latencies.append(time.perf_counter() - start)
            if status != 201:
                failures.append(f"POST {status}")
                break
            acked.append(task_id)
        except (OSError, http.client.HTTPException) as exc:
            failures.append(type(exc).__name__)
            conn.close()
            conn = None
            if len(failures) > 1000:
                break
    if conn is not None:
        conn.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--judgements", type=int, default=1000)
    parser.add_argument("--fresh-connections", action="store_true")
    parser.add_argument("--server", default=None, help="a server.py to load make_server from")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.judgements < args.clients or args.judgements % args.clients:
        parser.error("--judgements must be a positive multiple of --clients")
    per_client = args.judgements // args.clients
    with tempfile.TemporaryDirectory() as tmp:
        tasks = Path(tmp, "tasks.jsonl")
        tasks.write_text(
            "".join(
                json.dumps({"id": f"t{i}", "prompt": f"prompt {i}", "responses": [f"r{i}.{j}" for j in range(3)]})
                + "\n"
                for i in range(per_client)
            )
        )
        store = AnnotationStore(Path(tmp, "ann.db"))
        store.import_tasks(tasks)
        tokens = [store.add_annotator(f"a{i:03d}") for i in range(args.clients)]
        server = load_make_server(args.server)(store, port=0, per_task=args.clients, quiet=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.server_address[1]
        latencies, acked, failures = [], [], []
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            for token in tokens:
                pool.submit(annotate, port, token, args.fresh_connections, latencies, acked, failures)
        wall = time.perf_counter() - start
        server.shutdown()
        server.server_close()
        with sqlite3.connect(Path(tmp, "ann.db")) as db:
            stored = db.execute("SELECT count(*) FROM judgements").fetchone()[0]
        store.close()
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    print(
        f"clients={args.clients} judgements={args.judgements} "
        f"connections={'fresh' if args.fresh_connections else 'keep-alive'} server={args.server or 'current'}"
    )
    print(
        f"POST latency p50={quantiles[49] * 1e3:.1f} ms p99={quantiles[98] * 1e3:.1f} ms  wall={wall:.2f} s  "
        f"acked={len(acked)} stored={stored} lost={len(acked) - min(stored, len(acked))} "
        f"not_done={args.judgements - stored} failed_requests={len(failures)}"
    )
    return 0 if not failures and stored == args.judgements else 1


if __name__ == "__main__":
    sys.exit(main())
