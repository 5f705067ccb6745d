"""Imports point down only: client → server → engine → partition → storage → _native."""

from __future__ import annotations

import ast
import pathlib

import pytest

import tidelog

PACKAGE = pathlib.Path(tidelog.__file__).parent

# layer -> what it must never import (tidelog subpackages and third-party modules)
FORBIDDEN = {
    "storage": {"partition", "engine", "server", "client", "v1", "groups", "grpc", "asyncio"},
    "codec": {"storage", "partition", "engine", "server", "client", "v1", "groups", "grpc"},
    "partition": {"engine", "server", "client", "v1", "groups", "grpc", "asyncio"},
    "engine": {"server", "client", "v1", "grpc"},
    "server": {"client"},
    # the wire contract, the codec and shared values only
    "client": {"server", "engine", "storage", "partition", "groups", "queues"},
    # the coordinator is the broker's: it uses the engine, never a transport or a member
    "groups": {"server", "client", "v1", "grpc", "wire"},
    # queues, like the coordinator, are the broker's: over the engine, never a transport or a client
    "queues": {"server", "client", "v1", "grpc", "wire", "groups", "cluster", "replication"},
    "headers.py": {"storage", "partition", "engine", "server", "client", "groups", "queues", "wire", "v1", "grpc"},
    # membership in etcd: under the server, beside the engine; never a transport or a client
    "cluster": {"server", "client", "v1", "grpc", "wire", "engine", "partition", "storage", "groups"},
    # replicated partitions: the engine's partitions driven by the cluster's state; the transport is the server's
    "replication": {"server", "client", "v1", "grpc", "wire", "groups"},
    # the contract both sides share depends on neither: generated code, errors, grpc and protobuf only
    "wire": {"storage", "partition", "engine", "server", "client", "groups", "codec", "config"},
    # the tools: examine and repair read the directory through the storage layer, never a server;
    # top watches a broker through the client alone
    "examine.py": {"server", "client", "v1", "grpc", "wire"},
    "repair.py": {"server", "client", "v1", "grpc", "wire"},
    "top.py": {"server", "engine", "storage", "partition", "groups", "wire", "v1"},
    # Kafka's wire protocol: an edge beside the gRPC server, over the engine and the offset store; it
    # shares the server's byte budget and metric buckets, never gRPC, tidelog's wire contract or a client
    "kafka_protocol": {"client", "v1", "grpc", "wire", "cluster", "replication", "queues"},
    # the broker's TLS material and users: files and crypto, never a transport's handlers or the data path
    "security": {
        "client",
        "server",
        "engine",
        "storage",
        "partition",
        "groups",
        "queues",
        "cluster",
        "replication",
        "kafka_protocol",
        "v1",
        "wire",
    },
    "values.py": {"storage", "partition", "engine", "server", "client", "groups", "wire", "v1", "grpc"},
    # the web console reads a broker through the client alone, as top does, never the broker's internals
    "console": {
        "server",
        "engine",
        "storage",
        "partition",
        "groups",
        "queues",
        "cluster",
        "replication",
        "kafka_protocol",
        "security",
        "wire",
        "v1",
        "grpc",
    },  # fmt: skip
}


def imports_of(path: pathlib.Path) -> set[str]:
    """Modules imported by a file, as dotted names relative to tidelog (or absolute for others)."""
    rel_pkg = path.relative_to(PACKAGE).parent.parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel_pkg[: len(rel_pkg) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [".".join(base + [a.name]) for a in node.names]
                out |= {"tidelog." + n if n else "tidelog" for n in names}
            else:
                out.add(node.module)
    return out


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "v1" not in p.relative_to(PACKAGE).parts[:1])


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layers_import_only_downwards(path):
    layer = path.relative_to(PACKAGE).parts[0]
    banned = FORBIDDEN.get(layer, set())
    for name in imports_of(path):
        inner = name[len("tidelog.") :] if name.startswith("tidelog.") else None
        for b in banned:
            hit = (inner is not None and (inner == b or inner.startswith(b + "."))) or (
                inner is None and (name == b or name.startswith(b + "."))
            )
            assert not hit, f"{path.relative_to(PACKAGE)} ({layer}) imports {name}"


def test_generated_protobuf_code_is_imported_only_by_the_wire_contract_server_and_client():
    for path in modules():
        parts = path.relative_to(PACKAGE).parts
        if parts[0] in ("server", "client", "wire"):
            continue
        for name in imports_of(path):
            assert not name.startswith("tidelog.v1"), f"{path.relative_to(PACKAGE)} imports {name}"


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = ("tidelog",) + rel.parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_itself_back_through_others():
    """No import cycles between tidelog's modules (also through imports made inside functions)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "v1" not in p.relative_to(PACKAGE).parts[:1]}
    graph = {}
    for name, path in files.items():
        deps = set()
        for imported in imports_of(path):
            while imported and imported not in files:  # `from .mod import Name` names mod; drop Name
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != "tidelog" and not name.startswith(imported + "."):
                deps.add(imported)
        graph[name] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep) :] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_consumer_is_the_class_of_both_kinds_of_consumer():
    from tidelog.client import Consumer, GroupConsumer, PartitionConsumer

    assert issubclass(PartitionConsumer, Consumer) and issubclass(GroupConsumer, Consumer)
    consumer = Consumer("127.0.0.1:1", "t", partition=0, offset=0)
    try:
        assert isinstance(consumer, PartitionConsumer)
    finally:
        consumer.close()
