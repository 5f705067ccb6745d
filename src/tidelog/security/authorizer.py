"""The decision for one caller and one (operation, resource): superusers, then the ACL file, re-read when it
changes. Every denial is logged as an audit line and counted."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from ..errors import (
    AuthorizationError,
    ClusterAuthorizationError,
    GroupAuthorizationError,
    QueueAuthorizationError,
    TopicAuthorizationError,
)
from . import json_file
from .acls import Acl, AclFile, decide

log = logging.getLogger("tidelog.audit")
ANONYMOUS = "ANONYMOUS"
"""The principal of every call when authentication is off (Kafka's name for it)."""
caller: contextvars.ContextVar[str] = contextvars.ContextVar("tidelog_principal", default=ANONYMOUS)
"""Who is calling: set by the gRPC gate (server/access.py) and by each Kafka connection, in the task
that serves the call."""

REFUSALS: dict[str, type[AuthorizationError]] = {
    "topic": TopicAuthorizationError,
    "group": GroupAuthorizationError,
    "queue": QueueAuthorizationError,
    "cluster": ClusterAuthorizationError,
}


class Authorizer:
    """acls: the ACL file, or the ACLs a cluster's etcd holds (a json_file.Pushed); superusers: principals
    allowed everything; groups_of(principal): its groups."""

    def __init__(
        self,
        acls: str | json_file.Pushed[list[Acl]],
        superusers: Sequence[str],
        groups_of: Callable[[str], tuple[str, ...]],
        on_denied: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._acls: json_file.Watched[list[Acl]] | json_file.Pushed[list[Acl]] = (
            acls
            if isinstance(acls, json_file.Pushed)
            else json_file.Watched(acls, AclFile(acls).load, "ACL file", clock=clock)
        )
        self.superusers = frozenset(superusers)
        self._groups_of = groups_of
        self._on_denied = on_denied
        self._clock = clock

    def reload(self) -> None:
        """Read the ACL file again now (SIGHUP)."""
        self._acls.reload()

    def allows(self, principal: str, operation: str, resource: str, name: str) -> bool:
        """Whether it may, silently: for filtering what a listing shows (Kafka leaves out the topics a
        caller may not describe rather than refusing the listing)."""
        if principal in self.superusers:
            return True
        principals = {principal, "*", *(f"group:{g}" for g in self._groups_of(principal))}
        return decide(self._acls.current(), principals, resource, name, operation)

    def check(self, principal: str, operation: str, resource: str, name: str) -> None:
        """Raises the AuthorizationError of the resource's kind, naming the operation and the resource."""
        if self.allows(principal, operation, resource, name):
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


def audit_done(principal: str, method: str, changes: Iterable[str]) -> None:
    """The audit line of a create, delete or alter that was done ("create topic orders")."""
    log.info("done", extra={"event": "audit_done", "principal": principal, "method": method, "changes": list(changes)})
