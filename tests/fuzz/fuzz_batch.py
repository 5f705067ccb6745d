"""Coverage-guided fuzzing of the batch decoder with atheris (optional: pip install atheris).

    python tests/fuzz/fuzz_batch.py -runs=100000        # or -max_total_time=60

Each input is split into a batch buffer and a few ints. The native validator, decoders and scanners
may raise only ValueError/OverflowError; codec/batch.py only TidelogError; anything else (or a
crash) is a finding. Whatever validates must decode completely.

Coverage guidance reaches only Python code: the Cython extension is not built with libFuzzer
instrumentation, so inside it atheris is a fast random fuzzer (~100k inputs/s here), and the
hypothesis properties in tests/test_hostile_input.py and tests/test_record_batch_properties.py,
which build structured lies, remain the main net.
"""

import sys

import atheris

with atheris.instrument_imports():
    from tidelog._native import batch_scan
    from tidelog._native import record_batch as rb
    from tidelog.codec import batch as batch_codec
    from tidelog.codec import compression
    from tidelog.errors import TidelogError


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    pos = fdp.ConsumeIntInRange(0, 128)
    end = fdp.ConsumeIntInRange(0, 4096)
    count = fdp.ConsumeIntInRange(-2, (1 << 31) - 1)
    buf = fdp.ConsumeBytes(fdp.remaining_bytes())
    for call in (
        lambda: rb.validate_batches(buf, compression.decompress, end),
        lambda: rb.decode_table(buf, pos, min(end, len(buf)), count, 0, 0),
        lambda: rb.read_header(buf, pos),
        lambda: batch_scan.span_batches(buf, 0, len(buf), end),
    ):
        try:
            call()
        except (ValueError, OverflowError):
            pass
    try:
        infos = batch_codec.validate(buf)
    except TidelogError:
        return
    for info in infos:
        view = batch_codec.BatchView(buf, info.pos)
        if len(view.records()) != info.count:
            raise AssertionError(f"a validated batch decoded to the wrong number of records: {view!r}")


if __name__ == "__main__":
    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
