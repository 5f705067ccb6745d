"""The console's HTTP server: the pages (one shell, rendered in the browser by console.js from the JSON
below), their data under /api/, and the actions, on threads of its own (never the broker's event loop).

Read-only unless started with write=True (`--console-write`): every action is a POST that must also carry
the header `X-Tidelog-Console: 1`, which a page of another site cannot send without the browser asking
first (so a link or a form elsewhere cannot act through an operator's open console). Errors are JSON,
`{"error": "..."}`, with a status that says what kind (404 unknown, 409 exists, 403 not allowed, 400 the
rest). Charts use Chart.js from Debian's libjs-chart.js when it is installed (CHART_JS); without it the
pages show their tables and say how to get the charts.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from ..errors import (
    AuthenticationError,
    AuthorizationError,
    InvalidRequestError,
    TidelogError,
    TopicExistsError,
    UnknownGroupError,
    UnknownQueueError,
    UnknownTopicError,
)

log = logging.getLogger("tidelog.console")

CHART_JS = ("/usr/share/javascript/chart.js/chart.min.js", "/usr/share/javascript/chart.js/chart.umd.js")
"""Where Debian's libjs-chart.js puts Chart.js (a UMD build: `Chart` as a global)."""
PAGES = re.compile(r"^/(|topics|topics/[^/]+|topics/[^/]+/messages|groups|groups/[^/]+|queues|queues/[^/]+|settings)$")
STATIC = {"console.js": "text/javascript", "console.css": "text/css", "favicon.svg": "image/svg+xml"}
MAX_BODY = 1 << 20
WRITE_HEADER = "X-Tidelog-Console"


class Actions:
    """What the write actions do (tidelog's client on the broker): created by the caller, so that this
    module needs no producer of its own."""

    def __init__(
        self,
        admin: Any,
        produce: Callable[[str, int | None, bytes | None, bytes], Any],
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self.admin, self.produce, self.close = admin, produce, close


class ConsoleServer:
    """sessions: whose console a request is (console/__init__.py Sessions: one for everybody, or one per
    user of the broker)."""

    def __init__(self, sessions: Any, settings: dict[str, Any], *, write: bool = False) -> None:
        self.sessions = sessions
        self.settings, self.write = settings, write
        self.chart_js = next((p for p in CHART_JS if os.path.exists(p)), None)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """ssl_context: serve HTTPS (each connection's handshake on its own thread)."""
        console = self

        class Handler(_Handler):
            server_console = console

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise OSError(f"cannot serve the console on {host}:{port}: {exc.strerror or exc}") from None
        self._httpd.daemon_threads = True
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tidelog-console", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.sessions.close()

    # -- routing ---------------------------------------------------------------------------------------
    def get(self, path: str, query: dict[str, str], token: str | None = None) -> tuple[int, str, bytes]:
        if PAGES.match(path):
            if self.sessions.users:
                self.sessions.get(token)  # no user yet: the browser asks for one (401) before the page
            return 200, "text/html; charset=utf-8", self._shell()
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :])
        if path == "/favicon.ico":
            return self._static("favicon.svg")
        if not path.startswith("/api/"):
            return _json(404, {"error": f"no page {path}"})
        session = self.sessions.get(token)
        session.data.looked_at()
        parts = [urllib.parse.unquote(p) for p in path[len("/api/") :].split("/")]
        d = session.data
        routes: dict[tuple[str, ...], Callable[[], Any]] = {
            ("overview",): d.overview,
            ("series",): d.series,
            ("topics",): d.topics,
            ("groups",): d.groups,
            ("queues",): d.queues,
            ("settings",): lambda: {"broker": self.settings, "console_write": self.write},
        }
        if tuple(parts) in routes:
            return _json(200, routes[tuple(parts)]())
        if len(parts) == 2 and parts[0] in ("topics", "groups", "queues"):
            one = {"topics": d.topic, "groups": d.group, "queues": d.queue}[parts[0]]
            return _json(200, one(parts[1]))
        if len(parts) == 3 and parts[0] == "topics" and parts[2] == "messages":
            return _json(200, self._messages(session, parts[1], query))
        return _json(404, {"error": f"no data at {path}"})

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> tuple[int, str, bytes]:
        if not self.write:
            return _json(403, {"error": "the console is read-only: start the broker with --console-write to act"})
        session = self.sessions.get(token)
        try:
            return self._act(session, path, body)
        finally:
            with contextlib.suppress(TidelogError):
                session.data.view(fresh=True)  # the pages show what the action changed

    def _act(self, session: Any, path: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
        parts = [urllib.parse.unquote(p) for p in path.removeprefix("/api/").split("/")]
        admin = session.actions.admin
        if parts == ["topics"]:
            name = _text(body, "name")
            rf = body.get("replication_factor")
            admin.create_topic(name, _int(body, "partitions", 1), int(rf) if rf else None)
            log.warning("console: topic created", extra={"event": "console_action", "action": "create", "topic": name})
            return _json(200, {"created": name})
        if len(parts) == 3 and parts[0] == "topics" and parts[2] == "delete":
            if body.get("confirm") != parts[1]:
                raise InvalidRequestError(f"type the topic's name ({parts[1]}) to confirm its deletion")
            admin.delete_topic(parts[1])
            log.warning(
                "console: topic deleted", extra={"event": "console_action", "action": "delete", "topic": parts[1]}
            )
            return _json(200, {"deleted": parts[1]})
        if len(parts) == 3 and parts[0] == "topics" and parts[2] == "produce":
            partition = body.get("partition")
            key = body.get("key")
            sent = session.actions.produce(
                parts[1],
                None if partition in (None, "") else int(partition),
                None if key in (None, "") else str(key).encode(),
                str(body.get("value", "")).encode(),
            )
            return _json(200, {"partition": sent.partition, "offset": sent.offset})
        if len(parts) == 3 and parts[0] == "groups" and parts[2] == "reset":
            return _json(200, self._reset(admin, parts[1], body))
        if len(parts) == 3 and parts[0] == "queues" and parts[2] == "redrive":
            queue = admin.describe_queue(parts[1])
            source = queue.config.dead_letter_topic
            if not source:
                raise InvalidRequestError(f"queue {parts[1]!r} has no dead-letter topic")
            target = str(body.get("target") or queue.config.topics[0])
            moved = admin.redrive(source, target, _int(body, "limit", 0))
            log.warning(
                "console: dead letters redriven",
                extra={"event": "console_action", "action": "redrive", "queue": parts[1], "moved": moved},
            )
            return _json(200, {"moved": moved, "source": source, "target": target})
        return _json(404, {"error": f"no action at {path}"})

    def _messages(self, session: Any, topic: str, query: dict[str, str]) -> dict[str, Any]:
        def number(name: str) -> int | None:
            value = query.get(name, "")
            if value == "":
                return None
            try:
                return int(value)
            except ValueError:
                raise InvalidRequestError(f"{name} must be a whole number, got {value!r}") from None

        return session.data.messages(
            session.consumer_for,
            topic,
            number("partition") or 0,
            number("offset"),
            number("time"),
            number("limit") or 20,
        )

    def _reset(self, admin: Any, group_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A preview (each partition's committed offset and where it would go) unless body["apply"]."""
        topic, to = _text(body, "topic"), str(body.get("to", "earliest"))
        partitions = admin.partitions(topic)
        committed = admin.committed_offsets(group_id) if group_id in admin.list_groups() else {}
        if to in ("earliest", "latest"):
            targets = {p: admin.list_offsets(topic, p, to) for p in range(partitions)}
        else:
            try:
                offset = int(to)
            except ValueError:
                raise InvalidRequestError(f'"to" is earliest, latest or an offset, got {to!r}') from None
            targets = dict.fromkeys(range(partitions), offset)
        rows = [
            {"partition": p, "committed": committed.get((topic, p)), "target": targets[p]} for p in range(partitions)
        ]
        if body.get("apply"):
            applied = admin.reset_offsets(group_id, topic, to if to in ("earliest", "latest") else int(to))
            rows = [{**r, "target": applied.get((topic, r["partition"]), r["target"])} for r in rows]
            log.warning(
                "console: group offsets reset",
                extra={"event": "console_action", "action": "reset", "group": group_id, "topic": topic, "to": to},
            )
        return {"group_id": group_id, "topic": topic, "to": to, "applied": bool(body.get("apply")), "partitions": rows}

    def _shell(self) -> bytes:
        html = resources.files(__package__).joinpath("static/index.html").read_text()
        chart = '<script src="/static/chart.min.js"></script>' if self.chart_js else ""
        return html.replace("<!--chart-->", chart).encode()

    def _static(self, name: str) -> tuple[int, str, bytes]:
        if name == "chart.min.js" and self.chart_js:
            with open(self.chart_js, "rb") as f:
                return 200, "text/javascript", f.read()
        if name not in STATIC:
            return _json(404, {"error": f"no file {name}"})
        return 200, STATIC[name], resources.files(__package__).joinpath(f"static/{name}").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_console: ConsoleServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        self._answer(lambda: self.server_console.get(url.path, query, self._token()))

    def do_POST(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)

        def act() -> tuple[int, str, bytes]:
            if self.headers.get(WRITE_HEADER) != "1":
                return _json(403, {"error": f"actions need the header {WRITE_HEADER}: 1 (the console's pages send it)"})
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                return _json(400, {"error": "the request body is too large"})
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return _json(400, {"error": "the request body is not JSON"})
            if not isinstance(body, dict):
                return _json(400, {"error": "the request body is a JSON object"})
            return self.server_console.post(url.path, body, self._token())

        self._answer(act)

    def _token(self) -> str | None:
        """The user's token: HTTP Basic (the browser asks for a user and its secret) or Bearer."""
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() or None
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(value.strip(), validate=True).decode("utf-8") or None
            except (ValueError, UnicodeDecodeError):
                return None
        return None

    def _answer(self, work: Callable[[], tuple[int, str, bytes]]) -> None:
        challenge = False
        try:
            status, kind, payload = work()
        except AuthenticationError as exc:
            challenge = True
            status, kind, payload = _json(401, {"error": exc.message})
        except TidelogError as exc:
            status, kind, payload = _json(_status_of(exc), {"error": exc.message})
        except Exception as exc:  # a bug of the console: logged, the broker goes on
            log.exception("console request failed", extra={"event": "console_failed", "path": self.path})
            status, kind, payload = _json(500, {"error": f"the console failed: {exc}"})
        self.send_response(status)
        if challenge:
            self.send_header("WWW-Authenticate", 'Basic realm="tidelog", charset="UTF-8"')
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # requests are not logged (actions are, above)


def _status_of(exc: TidelogError) -> int:
    if isinstance(exc, (UnknownTopicError, UnknownGroupError, UnknownQueueError)):
        return 404
    if isinstance(exc, TopicExistsError):
        return 409
    if isinstance(exc, AuthorizationError):
        return 403
    return 400


def _json(status: int, value: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(value, default=str).encode()


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"{name} is needed")
    return value


def _int(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a whole number, got {value!r}") from None
