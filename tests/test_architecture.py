"""Imports point down only: client → server → broker → log → storage → _native (DESIGN.md §1)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import tidelog

PACKAGE = pathlib.Path(tidelog.__file__).parent

# layer -> what it must never import (tidelog subpackages and third-party modules)
FORBIDDEN = {
    "storage": {"log", "broker", "server", "client", "v1", "groups", "grpc", "asyncio"},
    "codec": {"storage", "log", "broker", "server", "client", "v1", "groups", "grpc"},
    "log": {"broker", "server", "client", "v1", "groups", "grpc", "asyncio"},
    "broker": {"server", "client", "v1", "grpc"},
    "server": {"client"},
    # the wire contract, the codec and shared values only (groups/member.py moves into the client next)
    "client": {"server", "broker", "storage", "log"},
    # the contract both sides share depends on neither: generated code, errors, grpc and protobuf only
    "wire": {"storage", "log", "broker", "server", "client", "groups", "codec", "config"},
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
        inner = name[len("tidelog."):] if name.startswith("tidelog.") else None
        for b in banned:
            hit = (inner is not None and (inner == b or inner.startswith(b + "."))) or \
                  (inner is None and (name == b or name.startswith(b + ".")))
            assert not hit, f"{path.relative_to(PACKAGE)} ({layer}) imports {name}"


def test_generated_protobuf_code_is_imported_only_by_the_wire_contract_server_and_client():
    for path in modules():
        parts = path.relative_to(PACKAGE).parts
        if parts[0] in ("server", "client", "wire"):
            continue
        for name in imports_of(path):
            assert not name.startswith("tidelog.v1"), f"{path.relative_to(PACKAGE)} imports {name}"
