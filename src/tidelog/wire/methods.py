"""Method paths and message types of the wire API, read from the service descriptors.

The client calls `/tidelog.v1.Admin/CreateTopic` and the server registers `CreateTopic` under
`tidelog.v1.Admin`: both come from here, so a path typed by hand on one side cannot drift from the
.proto. `handlers` refuses a service table that misses or invents a method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from ..v1 import tidelog_pb2 as pb


class Method(NamedTuple):
    service: str  # full service name: "tidelog.v1.Admin"
    name: str  # "CreateTopic"
    request: type[Message]  # generated message class
    response: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        """What a client puts on the wire: "/tidelog.v1.Admin/CreateTopic"."""
        return f"/{self.service}/{self.name}"


def service_name(service: str) -> str:
    """The full name of a service by its short name ("Admin" → "tidelog.v1.Admin")."""
    return _service(service).full_name


def method(service: str, name: str) -> Method:
    """The method `name` of `service` (short names); KeyError names what the .proto does not have."""
    desc = _service(service).methods_by_name.get(name)
    if desc is None:
        raise KeyError(f"service {service} has no method {name!r}")
    return Method(
        desc.containing_service.full_name,
        desc.name,
        message_factory.GetMessageClass(desc.input_type),
        message_factory.GetMessageClass(desc.output_type),
        desc.client_streaming,
        desc.server_streaming,
    )


def methods(service: str) -> list[Method]:
    return [method(service, m.name) for m in _service(service).methods]


def handlers(service: str, table: dict[str, Callable[[Method], grpc.RpcMethodHandler]]) -> grpc.GenericRpcHandler:
    """A service's handlers: `table` maps every method name of the service to a function building the
    handler from its Method. A name the .proto lacks, or a method without a handler, is a ValueError."""
    names = {m.name for m in _service(service).methods}
    if set(table) != names:
        raise ValueError(
            f"service {service}: handlers for {sorted(set(table) - names)} are not in the "
            f".proto and {sorted(names - set(table))} have none"
        )
    return grpc.method_handlers_generic_handler(
        service_name(service), {name: build(method(service, name)) for name, build in table.items()}
    )


def _service(service: str) -> ServiceDescriptor:
    desc = pb.DESCRIPTOR.services_by_name.get(service)
    if desc is None:
        raise KeyError(f"the wire API has no service {service!r}")
    return desc
