"""Who may do what: the ACL file, managed by `tidelog acls`, and the decision for one request.

An ACL is (principal, resource, operation, allow or deny):

- principal: a user name, `group:NAME` (users get groups in the users file), or `*` (any authenticated caller);
- resource: a kind (topic, group, queue, cluster) and a name, matched literally or as a prefix
  (`--prefix orders.` covers `orders.eu` and `orders.us`); the cluster's name is always `*`;
- operation: produce, consume, describe, create, delete, alter, admin, or all. produce, consume, create,
  delete and alter imply describe of the same resource (as Kafka's WRITE and READ imply DESCRIBE).

With an ACL file a broker refuses whatever no ACL allows; a deny beats any allow; superusers (a server
setting) skip the check. The file is JSON, written and read as every security file is (json_file.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from ..errors import InvalidRequestError
from . import json_file
from .users import NAME

FORMAT_VERSION = 1
RESOURCES = ("topic", "group", "queue", "cluster")
OPERATIONS = ("produce", "consume", "describe", "create", "delete", "alter", "admin", "all")
IMPLY_DESCRIBE = {"produce", "consume", "create", "delete", "alter"}
CLUSTER = "*"


@dataclass(frozen=True)
class Acl:
    principal: str
    resource: str
    name: str
    operation: str
    prefix: bool = False
    deny: bool = False

    def __post_init__(self) -> None:
        who = self.principal.removeprefix("group:")
        if self.principal != "*" and not NAME.match(who):
            raise InvalidRequestError(f"a principal is a user name, group:NAME or *, not {self.principal!r}")
        if self.resource not in RESOURCES:
            raise InvalidRequestError(f"a resource is one of {', '.join(RESOURCES)}, not {self.resource!r}")
        if self.operation not in OPERATIONS:
            raise InvalidRequestError(f"an operation is one of {', '.join(OPERATIONS)}, not {self.operation!r}")
        if self.resource == "cluster" and (self.name != CLUSTER or self.prefix):
            raise InvalidRequestError("the cluster resource has no name (it is always *)")
        if not self.name or len(self.name) > 255:
            raise InvalidRequestError("a resource name is 1-255 characters (* for every resource of its kind)")

    def covers(self, resource: str, name: str, operation: str) -> bool:
        if resource != self.resource:
            return False
        if not (self.name == "*" or name == self.name or (self.prefix and name.startswith(self.name))):
            return False
        if self.operation == "all" or self.operation == operation:
            return True
        return operation == "describe" and self.operation in IMPLY_DESCRIBE

    def describe(self) -> str:
        kind = "prefix" if self.prefix else "literal"
        return (
            f"{'deny' if self.deny else 'allow'} {self.principal} {self.operation} on {self.resource} "
            f"{self.name!r} ({kind})"
        )


def decide(acls: Iterable[Acl], principals: set[str], resource: str, name: str, operation: str) -> bool:
    """Whether one of `principals` (a user, its groups, "*") may: an allow and no deny."""
    allowed = False
    for acl in acls:
        if acl.principal in principals and acl.covers(resource, name, operation):
            if acl.deny:
                return False
            allowed = True
    return allowed


def parse_acls(raw: bytes, where: str, otherwise: str) -> list[Acl]:
    """The ACLs of a document held elsewhere than in a file (a cluster's, in etcd)."""
    return json_file.parse_document(raw, where, FORMAT_VERSION, _acls, otherwise)


def _acls(doc: dict) -> list[Acl]:
    return [Acl(**entry) for entry in doc["acls"]]


class AclFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def stamp(self) -> tuple[int, int, int] | None:
        return json_file.stamp(self.path)

    def load(self) -> list[Acl]:
        """Every ACL; [] when there is no file. A damaged file raises InvalidConfigError naming it."""
        return json_file.read_document(self.path, "ACL file", FORMAT_VERSION, _acls, [])

    def add(self, acl: Acl) -> bool:
        """False when the same ACL is there already."""
        with self._changing() as acls:
            if acl in acls:
                return False
            acls.append(acl)
        return True

    def remove(self, acl: Acl) -> bool:
        with self._changing() as acls:
            if acl not in acls:
                return False
            acls.remove(acl)
        return True

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list[Acl]]:
        with json_file.locked(self.path):
            acls = self.load()
            yield acls
            json_file.write_json_atomically(self.path, {"version": FORMAT_VERSION, "acls": [asdict(a) for a in acls]})
