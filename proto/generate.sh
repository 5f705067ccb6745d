#!/usr/bin/env bash
# Regenerate src/tidelog/v1/*_pb2.py(i) from proto/. The generated files are committed;
# tests/test_wire_api.py::test_generated_code_matches_the_proto_files fails when they no longer match
# the .proto files.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src proto/tidelog/v1/*.proto
