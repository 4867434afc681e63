"""HTTP server and page of the annotation workbench (stdlib only).

    GET  /                  the page (no token needed; the page asks for one)
    GET  /static/app.js     its script; /static/app.css its style
    GET  /api/next          200 {"task_id", "prompt", "responses"}, 204 when nothing is left
    POST /api/judgements    {"task_id", "ranks", "comment"?} -> 201 the stored judgement
    POST /api/skip          {"task_id"} -> 204
    GET  /api/progress      200 {"judged", "skipped", "remaining", "tasks", "judgements"}

Every /api call needs `Authorization: Bearer <token>` (401 otherwise). Errors are JSON
{"error": message}; a refused judgement (409) also carries {"next": the next task or null}.

Each connection reads under a socket timeout (`request_timeout`): a client that stalls in its
headers or body, or idles on a keep-alive connection, is cut off. At most `max_connections` are
served at once; beyond that a new connection waits `busy_wait` seconds for a slot, then gets 503.

Storage, authentication and the meaning of `ranks` belong to the store
(`preference_data.annotation.store.AnnotationStore`); this module only checks the shape of
requests and maps the store's `AnnotationError.status` to the response.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import traceback
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64
BUSY_WAIT_S = 0.5
LISTEN_BACKLOG = 128
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: 35\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    b'{"error": "server busy, try again"}'
)

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"

# route -> (file in this package's static/ folder, content type): the page, served as it is stored
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}

JUDGEMENT_FIELDS = {"task_id", "ranks", "comment"}
SKIP_FIELDS = {"task_id"}

# route -> allowed method; anything else under a known route is 405, unknown routes 404.
ROUTES = {
    "/": "GET",
    "/index.html": "GET",
    "/static/app.js": "GET",
    "/static/app.css": "GET",
    "/api/next": "GET",
    "/api/progress": "GET",
    "/api/judgements": "POST",
    "/api/skip": "POST",
}


@cache
def _static_bytes(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class HTTPError(Exception):
    """A request the server refuses, with the status and the message the client sees."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _store_error_status(exc: BaseException) -> int | None:
    # Duck-typed on purpose: the server depends on the store's interface (a ValueError with a
    # 4xx `.status`), not on its module, so tests may run it against a stand-in store.
    status = getattr(exc, "status", None)
    if isinstance(exc, ValueError) and isinstance(status, int) and 400 <= status < 500:
        return status
    return None


def _is_task_id(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _lone_surrogate_field(value: Any, where: str) -> str | None:
    """The first field (dotted path) whose text holds a lone surrogate, which is not Unicode."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return path
        elif isinstance(item, dict):
            named = ((k.encode("utf-8", "backslashreplace").decode("ascii", "replace"), v) for k, v in item.items())
            stack.extend((v, f"{path}.{k}" if path else k) for k, v in named)
            stack.extend((k, f"{path} (a key)" if path else "a key") for k in item)
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return None


class AnnotateHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, so a client posting many judgements reuses one socket.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in one write; without Nagle that write is sent at once, so a
    # keep-alive client does not wait for a delayed ACK.
    disable_nagle_algorithm = True
    server_version = "rlhf-annotate"
    sys_version = ""
    server: AnnotateServer

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # read by StreamRequestHandler.setup
        super().setup()

    # ---- dispatch -------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            allowed = ROUTES.get(path)
            if allowed is None:
                raise HTTPError(404, "not found")
            if method != allowed:
                self._drain_small_body()
                raise HTTPError(405, f"method {method} not allowed on {path}")
            if path.startswith("/api/"):
                annotator = self._authenticate()
                self._handle_api(path, annotator)
            else:
                self._handle_static(path)
        except HTTPError as exc:
            self._send_json(exc.status, {"error": exc.message, **exc.extra})
        except TimeoutError:
            # The client stalled in its body: nothing more is read from this connection.
            self.close_connection = True
            self._send_json(408, {"error": f"request body not received within {self.server.request_timeout:g} s"})
        except Exception as exc:  # noqa: BLE001 - the client must never see a traceback
            status = _store_error_status(exc)
            if status is not None:
                self._send_json(status, {"error": str(exc)})
            else:
                sys.stderr.write(f"annotate-server: error on {method} {path}\n")
                traceback.print_exc(file=sys.stderr)
                self.close_connection = True
                self._send_json(500, {"error": "internal error"})

    # ---- API ------------------------------------------------------------------------------

    def _authenticate(self) -> str:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self._drain_small_body()
            raise HTTPError(401, "missing bearer token")
        annotator = self.server.store.authenticate(token)
        if not annotator:
            self._drain_small_body()
            raise HTTPError(401, "invalid token")
        return annotator

    def _handle_api(self, path: str, annotator: str) -> None:
        store, per_task = self.server.store, self.server.per_task
        if path == "/api/next":
            task = store.next_task(annotator, per_task=per_task)
            if task is None:
                self._send_empty(204)
            else:
                self._send_json(200, {k: task[k] for k in ("task_id", "prompt", "responses")})
        elif path == "/api/progress":
            self._send_json(200, store.progress(annotator, per_task=per_task))
        elif path == "/api/judgements":
            body = self._read_json(JUDGEMENT_FIELDS, required={"task_id", "ranks"})
            ranks = body["ranks"]
            if not isinstance(ranks, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
                raise HTTPError(400, "ranks must be a list of integers")
            comment = body.get("comment")
            if comment is not None and not isinstance(comment, str):
                raise HTTPError(400, "comment must be a string")
            try:
                stored = store.record_judgement(annotator, body["task_id"], ranks, comment=comment, per_task=per_task)
            except Exception as exc:
                if _store_error_status(exc) != 409:
                    raise
                task = store.next_task(annotator, per_task=per_task)
                nxt = None if task is None else {k: task[k] for k in ("task_id", "prompt", "responses")}
                raise HTTPError(409, str(exc), next=nxt) from None
            self._send_json(201, stored)
        elif path == "/api/skip":
            body = self._read_json(SKIP_FIELDS, required={"task_id"})
            store.record_skip(annotator, body["task_id"])
            self._send_empty(204)
        else:  # pragma: no cover - ROUTES and this switch list the same paths
            raise HTTPError(404, "not found")

    def _read_json(self, allowed: set[str], required: set[str]) -> dict:
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HTTPError(400, "chunked bodies are not accepted; send Content-Length")
        try:
            length = int(length_header) if length_header is not None else 0
        except ValueError:
            self.close_connection = True
            raise HTTPError(400, "bad Content-Length") from None
        if length < 0:
            self.close_connection = True
            raise HTTPError(400, "bad Content-Length")
        if length > MAX_BODY_BYTES:
            # The body is left unread, so this connection cannot carry another request.
            self.close_connection = True
            raise HTTPError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise HTTPError(415, "Content-Type must be application/json")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise HTTPError(400, "body is not valid JSON") from None
        except RecursionError:
            raise HTTPError(400, "body is nested too deeply to be a judgement") from None
        bad = _lone_surrogate_field(body, "")
        if bad is not None:
            raise HTTPError(400, f"field {bad} holds a lone surrogate escape (\\ud800-\\udfff): not valid Unicode")
        if not isinstance(body, dict):
            raise HTTPError(400, "body must be a JSON object")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise HTTPError(400, f"unknown field(s): {', '.join(unknown)}")
        missing = sorted(required - set(body))
        if missing:
            raise HTTPError(400, f"missing field(s): {', '.join(missing)}")
        if not _is_task_id(body["task_id"]):
            raise HTTPError(400, "task_id must be a non-empty string")
        return body

    def _drain_small_body(self) -> None:
        # Read a refused request's body so a keep-alive connection stays in sync; a large or
        # unsized one closes the connection instead.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        elif length != 0 or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    # ---- static ---------------------------------------------------------------------------

    def _handle_static(self, path: str) -> None:
        name, content_type = STATIC_FILES[path]
        self._send_bytes(200, _static_bytes(name), content_type, PAGE_CSP)

    # ---- responses ------------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
        self._send_bytes(status, data, "application/json; charset=utf-8", API_CSP)

    def _send_empty(self, status: int) -> None:
        self.send_response(status)
        self._common_headers(API_CSP)
        if status != 204:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def _end_headers_with(self, data: bytes) -> None:
        # end_headers() flushes the headers in a write of their own; here the body joins them.
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(data)
        self.flush_headers()

    def _send_bytes(self, status: int, data: bytes, content_type: str, csp: str) -> None:
        self.send_response(status)
        self._common_headers(csp)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._end_headers_with(data if self.command != "HEAD" else b"")

    def _common_headers(self, csp: str) -> None:
        self.send_header("Content-Security-Policy", csp)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")

    def log_message(self, format: str, *args: Any) -> None:
        # The default line holds the request line only (never headers), so tokens stay out.
        if not self.server.quiet:
            super().log_message(format, *args)


class AnnotateServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG  # the listen() backlog: connections the kernel holds

    def __init__(
        self,
        address,
        store,
        per_task: int = 1,
        quiet: bool = False,
        request_timeout: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        busy_wait: float = BUSY_WAIT_S,
    ):
        self.store = store
        self.per_task = per_task
        self.quiet = quiet
        self.request_timeout = request_timeout
        self.busy_wait = busy_wait
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._stopping = False
        super().__init__(address, AnnotateHandler)

    # Keep-alive connections live in their own threads and would go on serving after
    # `shutdown()`; they are tracked so that `server_close()` really stops the server.
    def process_request(self, request, client_address):
        if self._stopping:
            super().shutdown_request(request)
            return
        if not self._slots.acquire(timeout=self.busy_wait):
            self._refuse_busy(request)
            return
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.shutdown_request(request)
            raise

    def _refuse_busy(self, request) -> None:
        # Read what has arrived (closing over unread data would reset the connection and lose
        # the answer), answer 503 and close; bounded by short timeouts.
        try:
            request.settimeout(0.05)
            try:
                request.recv(MAX_BODY_BYTES)
            except OSError:
                pass
            request.sendall(BUSY_RESPONSE)
        except OSError:
            pass
        super().shutdown_request(request)

    def shutdown_request(self, request):
        with self._open_lock:
            counted = request in self._open
            self._open.discard(request)
        super().shutdown_request(request)
        if counted:
            self._slots.release()

    def shutdown(self):
        # Stop keep-alive connections at once: the accept loop takes up to its poll interval
        # to notice, and would go on serving the open connections meanwhile.
        self._stopping = True
        self._cut_open_connections()
        super().shutdown()

    def server_close(self):
        self._stopping = True
        super().server_close()
        self._cut_open_connections()

    def _cut_open_connections(self) -> None:
        with self._open_lock:
            still_open = list(self._open)
        for conn in still_open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(
    store,
    host: str = "127.0.0.1",
    port: int = 8080,
    per_task: int = 1,
    quiet: bool = False,
    request_timeout: float = REQUEST_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    busy_wait: float = BUSY_WAIT_S,
) -> ThreadingHTTPServer:
    """Bind the workbench on (host, port) (port 0 = ephemeral); call `serve_forever` to run it.

    `request_timeout` (seconds) bounds each read of a connection, `max_connections` the
    connections served at once, `busy_wait` how long a connection beyond them waits before 503."""
    if per_task < 1:
        raise ValueError("per_task must be >= 1")
    if not request_timeout > 0:
        raise ValueError(f"request_timeout must be > 0 seconds, got {request_timeout!r}")
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
        raise ValueError(f"max_connections must be an integer >= 1, got {max_connections!r}")
    if not busy_wait >= 0:
        raise ValueError(f"busy_wait must be >= 0 seconds, got {busy_wait!r}")
    return AnnotateServer(
        (host, port),
        store,
        per_task=per_task,
        quiet=quiet,
        request_timeout=request_timeout,
        max_connections=max_connections,
        busy_wait=busy_wait,
    )


def serve(store, host: str = "127.0.0.1", port: int = 8080, per_task: int = 1, **limits: Any) -> None:
    """Serve until Ctrl-C, then close the socket; `limits` as in `make_server`."""
    server = make_server(store, host, port, per_task, **limits)
    print(f"annotation workbench on {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        server.server_close()
