"""The wire API: generated code matches the .proto files, and hand framing matches the generated classes."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_code_matches_the_proto_files(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a test dependency) regenerates the code")
    out = tmp_path / "gen"
    out.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={out}",
            f"--pyi_out={out}",
            "proto/tidelog/v1/tidelog.proto",
        ],
        cwd=REPO,
        check=True,
    )
    for name in ("tidelog_pb2.py", "tidelog_pb2.pyi"):
        assert filecmp.cmp(
            out / "tidelog" / "v1" / name, os.path.join(REPO, "src", "tidelog", "v1", name), shallow=False
        ), f"{name} is stale: run proto/generate.sh"


int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(
    seq=st.integers(0, 2**64 - 1),
    topic=st.text(max_size=40),
    partition=st.integers(-(2**31), 2**31 - 1),
    batches=st.binary(max_size=3000),
)
def test_hand_framed_produce_request_equals_the_generated_message(seq, topic, partition, batches):
    raw = framing.encode_produce_request(seq, topic, partition, batches)
    generated = pb.ProduceRequest(sequence=seq, topic=topic, partition=partition, batches=batches)
    assert pb.ProduceRequest.FromString(raw) == generated
    view = framing.parse_produce_request(generated.SerializeToString())
    assert (view.sequence, view.topic, view.partition, bytes(view.batches)) == (seq, topic, partition, batches)


@given(nxt=int64s, hw=int64s, start=int64s, batches=st.binary(max_size=3000))
def test_hand_framed_subscribe_and_fetch_responses_equal_the_generated_messages(nxt, hw, start, batches):
    raw = framing.encode_subscribe_response(nxt, hw, start, batches)
    assert pb.SubscribeResponse.FromString(raw) == pb.SubscribeResponse(
        next_offset=nxt, high_watermark=hw, log_start=start, batches=batches
    )
    parsed = framing.parse_subscribe_response(raw)
    assert (parsed.next_offset, parsed.high_watermark, parsed.log_start, bytes(parsed.batches)) == (
        nxt,
        hw,
        start,
        batches,
    )
    raw = framing.encode_fetch_response("t", 3, nxt, hw, start, batches)
    assert pb.FetchResponse.FromString(raw) == pb.FetchResponse(
        topic="t", partition=3, next_offset=nxt, high_watermark=hw, log_start=start, batches=batches
    )
    parsed = framing.parse_fetch_response(raw)
    assert (parsed.next_offset, parsed.high_watermark, parsed.log_start, bytes(parsed.batches)) == (
        nxt,
        hw,
        start,
        batches,
    )


def _any_varint(value: int) -> bytes:
    """value as a varint of any width, also past 64 bits (what no conforming encoder writes)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


field_values = st.integers(0, 2**70 - 1)
produce_requests = st.builds(
    lambda seq, part, tail: b"\x08" + _any_varint(seq) + b"\x18" + _any_varint(part) + b"\x12\x01t" + tail,
    field_values,
    field_values,
    st.binary(max_size=20),
)


@given(st.one_of(st.binary(max_size=200), produce_requests))
def test_parsing_garbage_raises_value_error_or_returns_fields(data):
    try:
        view = framing.parse_produce_request(data)
    except ValueError:  # UnicodeDecodeError and framing.BadFieldError are ValueErrors
        return
    # whatever parses fits the message's types: the ack can echo every field
    assert 0 <= view.sequence < 2**64 and -(2**31) <= view.partition < 2**31
    pb.ProduceResult(sequence=view.sequence, topic=view.topic, partition=view.partition)
