"""What the security files (users, ACLs) share: JSON written whole, read back with a clear refusal when
damaged, and watched by a running broker.

Writes go to a temporary file (mode 0600), fsynced and renamed over the old one, the directory fsynced,
under an exclusive lock: a reader sees the old file or the new one, whole, and two `tidelog` commands
never lose each other's change. A file that does not parse is refused with its path and the reason,
never guessed at and never rewritten. A broker picks up changes by itself (`Watched`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from ..errors import InvalidConfigError, InvalidRequestError, TidelogError

T = TypeVar("T")
log = logging.getLogger("tidelog.security")

CHECK_EVERY_S = 1.0
"""How often a broker looks at a watched file's modification time."""


def stamp(path: str) -> tuple[int, int, int] | None:
    """What changes when the file is replaced (None: there is no file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_document(path: str, what: str, version: int, parse: Callable[[dict], T], empty: T) -> T:
    """parse(the JSON document) of the file; `empty` when there is none. A file that cannot be read,
    is not JSON, has another format version or does not parse raises InvalidConfigError naming it."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return empty
    except OSError as exc:
        raise InvalidConfigError(f"cannot read the {what} {path}: {exc}") from None
    return parse_document(raw, f"the {what} {path}", version, parse, "move it away and start it again")


def parse_document(raw: bytes, where: str, version: int, parse: Callable[[dict], T], otherwise: str) -> T:
    """parse(the JSON document in raw bytes); InvalidConfigError naming `where` and the repair (restore
    a backup, or `otherwise`) when it is not JSON, has another format version or does not parse."""
    try:
        doc = json.loads(raw)
        if doc.get("version") != version:
            raise ValueError(f"format version {doc.get('version')!r}, this tidelog reads {version}")
        return parse(doc)
    except (ValueError, KeyError, TypeError, AttributeError, InvalidRequestError) as exc:
        raise InvalidConfigError(f"{where} is damaged ({exc!s}); restore it from a backup, or {otherwise}") from None


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """An exclusive lock for changing the file at `path` (on `path`.lock, which stays)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_json_atomically(path: str, doc: dict[str, Any]) -> None:
    """Through a temporary file (mode 0600) fsynced and renamed over `path`, then the directory fsynced."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Watched(Generic[T]):
    """A file's content as a broker uses it: loaded at start (errors raise: a broker does not start on a
    damaged file), then loaded again when the file changes, at most one look per CHECK_EVERY_S. A change
    that cannot be loaded keeps the content read before, with an error logged: a broken edit never
    opens the broker. on_change(content) runs after each reload."""

    def __init__(
        self,
        path: str,
        load: Callable[[], T],
        what: str,
        on_change: Callable[[T], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self._load, self.what = path, load, what
        self.on_change, self._clock = on_change, clock
        self._stamp = stamp(path)
        self.content: T = load()
        self._checked = clock()

    def current(self) -> T:
        now = self._clock()
        if now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            if stamp(self.path) != self._stamp:
                self._reload()
        return self.content

    def reload(self) -> None:
        """Now, whether it changed or not (SIGHUP)."""
        self._checked = self._clock()
        self._reload()

    def _reload(self) -> None:
        new_stamp = stamp(self.path)
        try:
            content = self._load()
        except TidelogError as exc:
            log.error("%s; what was read before stays in force", exc.message, extra={"event": "reload_failed"})
            return
        self.content, self._stamp = content, new_stamp
        log.info(f"{self.what} reloaded", extra={"event": "security_file_reloaded", "path": self.path})
        if self.on_change is not None:
            self.on_change(content)


class Pushed(Generic[T]):
    """A document a broker is handed rather than reads (a cluster's users and ACLs, from its snapshots of
    etcd): each new value is parsed; one that does not parse keeps what was in force before, with an
    error logged, as a broken edit of a file does. Until a first value comes, `empty` (for users and
    ACLs: nobody, nothing allowed). on_change(content) runs after each change."""

    def __init__(self, parse: Callable[[bytes], T], what: str, empty: T) -> None:
        self._parse, self.what, self._empty = parse, what, empty
        self.content: T = empty
        self.on_change: Callable[[T], None] | None = None
        self._raw: bytes | None = None

    def current(self) -> T:
        return self.content

    def reload(self) -> None:
        """Nothing to read: the next snapshot brings the newest value."""

    def push(self, raw: bytes | None) -> None:
        """The value as etcd has it now (None: no such key)."""
        if raw == self._raw:
            return
        self._raw = raw
        try:
            content = self._empty if raw is None else self._parse(raw)
        except TidelogError as exc:
            log.error("%s; what was read before stays in force", exc.message, extra={"event": "reload_failed"})
            return
        self.content = content
        log.info(f"{self.what} loaded", extra={"event": "security_document_loaded"})
        if self.on_change is not None:
            self.on_change(content)
