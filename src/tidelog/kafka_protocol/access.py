"""What a Kafka client may do: the broker's ACLs (security/acls.py), asked per topic, group and the
cluster as each Kafka API needs, answered with Kafka's error codes and its authorized-operations bits.

Kafka's READ is tidelog's consume, WRITE is produce; DESCRIBE_CONFIGS goes with describe and
ALTER_CONFIGS with alter. The principal is the connection's (SASL, or a client certificate's name),
in `security.authorizer.caller`. Without an ACL file everything is allowed, as over gRPC.
"""

from __future__ import annotations

from ..errors import AuthorizationError
from ..security.acls import CLUSTER
from ..security.authorizer import Authorizer, caller

# Kafka's AclOperation codes, as the bits of an authorized-operations field
READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = range(
    3, 13
)
KAFKA_OPERATIONS: dict[str, dict[str, set[int]]] = {
    "topic": {
        "consume": {READ},
        "produce": {WRITE},
        "create": {CREATE},
        "delete": {DELETE},
        "alter": {ALTER, ALTER_CONFIGS},
        "describe": {DESCRIBE, DESCRIBE_CONFIGS},
    },
    "group": {"consume": {READ}, "delete": {DELETE}, "describe": {DESCRIBE}},
    "cluster": {
        "create": {CREATE},
        "alter": {ALTER, ALTER_CONFIGS},
        "describe": {DESCRIBE, DESCRIBE_CONFIGS},
        "admin": {CLUSTER_ACTION},
    },
}
"""Per resource kind, tidelog's operations and the Kafka operations each grants."""
ALWAYS = {"cluster": {IDEMPOTENT_WRITE}}
"""Granted to every authenticated caller: an idempotent producer id is random and changes nothing."""


class KafkaAccess:
    """authorizer None: everything is allowed."""

    def __init__(self, authorizer: Authorizer | None) -> None:
        self.authorizer = authorizer

    def refusal(self, operation: str, resource: str, name: str) -> AuthorizationError | None:
        """Why the caller may not (logged and counted as a denial), or None."""
        if self.authorizer is None:
            return None
        try:
            self.authorizer.check(caller.get(), operation, resource, name)
        except AuthorizationError as exc:
            return exc
        return None

    def code(self, operation: str, resource: str, name: str) -> int:
        """0 when the caller may, else Kafka's code for the refusal (29 topic, 30 group, 31 cluster)."""
        refused = self.refusal(operation, resource, name)
        return 0 if refused is None else refused.code

    def allows(self, operation: str, resource: str, name: str = CLUSTER) -> bool:
        """Silently: for leaving out of a listing what the caller may not see, as Kafka does."""
        return self.authorizer is None or self.authorizer.allows(caller.get(), operation, resource, name)

    def operations(self, resource: str, name: str = CLUSTER) -> set[int]:
        """The Kafka operations the caller has on the resource (an authorized-operations field)."""
        granted = set(ALWAYS.get(resource, ()))
        for operation, bits in KAFKA_OPERATIONS[resource].items():
            if self.allows(operation, resource, name):
                granted |= bits
        return granted
