"""Log output for the `tidelog` process: a human formatter, a JSON-lines formatter, and `configure()`.

Lower layers only call `logging.getLogger("tidelog.<area>")` and pass structured fields with `extra=`,
e.g. ``log.info("topic created", extra={"event": "topic_created", "topic": t, "partitions": n})``;
only the edge (cli, an embedding application) calls `configure`. Both formatters print every field a
record carries beyond the standard LogRecord attributes, so a call site names each fact once:

    2026-11-28T20:31:58.123Z INFO tidelog.engine topic created topic=orders partitions=3
    {"ts": "2026-11-28T20:31:58.123Z", "level": "INFO", "logger": "tidelog.engine",
     "event": "topic_created", "message": "topic created", "topic": "orders", "partitions": 3}

Timestamps are UTC with millisecond precision. Formatting is thread-safe (logging's handler lock).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, TextIO

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record (what `extra=` added), without "event"."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "event" and not k.startswith("_")}


def timestamp(record: logging.LogRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def _text(value: Any) -> str:
    """A field value as one shell-friendly token: bare when safe, else JSON-quoted."""
    if isinstance(value, str):
        if value and not any(c.isspace() or c in '"=\\' for c in value):
            return value
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None or isinstance(value, (bool, int)):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`<ts> <LEVEL> <logger> <message> key=value ...`, then any traceback on the following lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        extra = fields(record)
        if extra:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event (the message when a line names none),
    message, the record's fields, and `exception` (the traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, Any] = {
            "ts": timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None) or message,
            "message": message,
        }
        for key, value in fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _OwnHandler(logging.StreamHandler):
    """Marks the handler `configure` installed, so configuring again replaces it instead of adding one."""


def configure(format: str = "text", level: str = "info", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at `level` or above to `stream` (default stderr) in `format`."""
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {format!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    handler = _OwnHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OwnHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler
