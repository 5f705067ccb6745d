"""The decision for one caller and one (operation, resource): superusers, then the ACL file, re-read when it
changes. Every denial is logged as an audit line and counted."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ..errors import (
    AuthorizationError,
    ClusterAuthorizationError,
    GroupAuthorizationError,
    QueueAuthorizationError,
    TidelogError,
    TopicAuthorizationError,
)
from .acls import Acl, AclFile, decide

log = logging.getLogger("tidelog.audit")

CHECK_FILE_EVERY_S = 1.0
REFUSALS: dict[str, type[AuthorizationError]] = {
    "topic": TopicAuthorizationError,
    "group": GroupAuthorizationError,
    "queue": QueueAuthorizationError,
    "cluster": ClusterAuthorizationError,
}


class Authorizer:
    """acl_path: the ACL file; superusers: principals allowed everything; groups_of(principal): its groups."""

    def __init__(
        self,
        acl_path: str,
        superusers: Sequence[str],
        groups_of: Callable[[str], tuple[str, ...]],
        on_denied: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file = AclFile(acl_path)
        self._acls: list[Acl] = self._file.load()
        self._stamp = self._file.stamp()
        self._checked = clock()
        self.superusers = frozenset(superusers)
        self._groups_of = groups_of
        self._on_denied = on_denied
        self._clock = clock

    def reload(self) -> None:
        self._checked = self._clock() - CHECK_FILE_EVERY_S
        self._look_at_file()

    def check(self, principal: str, operation: str, resource: str, name: str) -> None:
        """Raises the AuthorizationError of the resource's kind, naming the operation and the resource."""
        if principal in self.superusers:
            return
        self._look_at_file()
        principals = {principal, "*", *(f"group:{g}" for g in self._groups_of(principal))}
        if decide(self._acls, principals, resource, name, operation):
            return
        what = "the cluster" if resource == "cluster" else f"{resource} {name!r}"
        log.warning(
            "denied",
            extra={
                "event": "audit_denied",
                "principal": principal,
                "operation": operation,
                "resource": resource,
                "resource_name": name,
            },
        )
        if self._on_denied is not None:
            self._on_denied(principal, operation, resource)
        raise REFUSALS[resource](f"{principal} may not {operation} {what}")

    def _look_at_file(self) -> None:
        now = self._clock()
        if now - self._checked < CHECK_FILE_EVERY_S:
            return
        self._checked = now
        stamp = self._file.stamp()
        if stamp == self._stamp:
            return
        try:
            acls = self._file.load()
        except TidelogError as exc:
            logging.getLogger("tidelog.security").error(
                "%s; the ACLs read before stay in force", exc.message, extra={"event": "acls_reload_failed"}
            )
            return
        self._acls, self._stamp = acls, stamp
        logging.getLogger("tidelog.security").info(
            "ACL file reloaded", extra={"event": "acls_reloaded", "acls": len(acls)}
        )
