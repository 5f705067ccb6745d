"""Embedded-engine benchmark: tidelog append/read vs SQLite WAL and a naive length-prefixed file.

    python -m benchmarks.embedded [--quick] [--json PATH] [--runs N] [--tmp DIR] [--default-malloc]

Every baseline runs in the same invocation (benchmarks.harness: rotation, a warm-up round, medians with
min and max, same-run ratios); MB/s and GB/s are 10^6 / 10^9 bytes of record payload per second. See
benchmarks/README.md. This is a measuring script: it asserts nothing about speed.
"""

from __future__ import annotations

import dataclasses
import itertools
import mmap
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import numpy as np

from tidelog import Engine
from tidelog.tuning import tune_malloc

from .harness import cli
from .harness.machine import announce, machine_info, machine_line
from .harness.payloads import BATCH, SEED, MiB, make_pool
from .harness.processes import log
from .harness.rounds import Rounds, Sample, Stopwatch
from .harness.tables import Compare, Section, sections_report, targets_table

SEGMENT_BYTES = 1 << 30  # one segment holds a whole run: no rolling is measured
FETCH_BYTES = 4 * MiB
TOPIC = "bench"
UNCAPPED = 1e9  # building a data set is not timed

# System names (also the keys of the JSON output)
T_BATCH = "tidelog, batch view (table)"
T_RECORD = "tidelog, Record per record"
NAIVE_JOIN = "naive file, 1000 records joined/write"
DUR_A1 = 'tidelog fsync="always", 1 producer'
DUR_N1 = 'tidelog fsync="never", 1 producer'
DUR_A2 = 'tidelog fsync="always", 2 producer threads'
DUR_N2 = 'tidelog fsync="never", 2 producer threads'
DUR_RAW = "raw os.pwrite + os.fdatasync per batch (ceiling, 1 writer)"
PARTS = {"append", "read", "durable", "io"}


@dataclass(frozen=True)
class Profile:
    name: str
    runs: int
    warmup: int
    kib_records: int  # 1 KiB append (and read dataset) per run
    small_records: int  # 100 B append (and read dataset) per run
    durable_records: int  # 1 KiB records per run of the fsync comparison
    pool_kib_batches: int  # distinct pre-built 1000-record batches, reused cyclically
    pool_small_batches: int
    io_bytes: int  # file size of the pwrite-vs-mmap micro-benchmark
    io_runs: int
    cap_s: float  # a timed loop stops early past this many seconds (marked "capped")


QUICK = Profile(
    "quick",
    runs=3,
    warmup=1,
    kib_records=128_000,
    small_records=1_000_000,
    durable_records=64_000,
    pool_kib_batches=32,
    pool_small_batches=64,
    io_bytes=256 * MiB,
    io_runs=3,
    cap_s=10.0,
)
DEFAULT = Profile(
    "default",
    runs=5,
    warmup=1,
    kib_records=384_000,
    small_records=2_000_000,
    durable_records=256_000,
    pool_kib_batches=64,
    pool_small_batches=128,
    io_bytes=512 * MiB,
    io_runs=5,
    cap_s=30.0,
)


class Bench:
    """The rounds, the profile, and fresh temporary directories for the runs."""

    def __init__(self, profile: Profile, tmp: str) -> None:
        self.p, self.tmp = profile, tmp
        self.rounds = Rounds(profile.runs, profile.warmup)

    def temp_dir(self, what: str) -> str:
        return tempfile.mkdtemp(prefix=f"tidelog-bench-{what}-", dir=self.tmp)


def check_count(what: str, got: int, expect: int, capped: bool) -> None:
    if got != expect and not capped:
        raise RuntimeError(f"{what}: read {got} records, expected {expect}")


# -- tidelog -------------------------------------------------------------------------------------------
def open_engine(directory: str, fsync: str) -> Engine:
    eng = Engine.open(directory, fsync=fsync)
    eng.create_topic(TOPIC, 1, segment_bytes=SEGMENT_BYTES)
    return eng


def tidelog_produce(
    eng: Engine, pool: list[list[bytes]], size: int, n_batches: int, cap_s: float, producers: int = 1
) -> Sample:
    """produce() n_batches batches of BATCH records; with producers > 1, that many threads share the
    batches (round robin) and append to the same partition concurrently."""
    produce = eng.produce
    npool = len(pool)
    counts = [0] * producers
    clock = Stopwatch(cap_s)

    def work(k: int) -> None:
        for i in range(k, n_batches, producers):
            produce(TOPIC, pool[i % npool], partition=0)
            counts[k] += 1
            if clock.expired(i + producers, n_batches):
                break

    if producers == 1:
        work(0)
    else:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    done = sum(counts) * BATCH
    return clock.sample(done, done * size)


def drop_engine(eng: Engine, directory: str) -> None:
    # Deleting the topic first drops its dirty pages instead of fsyncing them on close (saves time
    # between runs; nothing here is timed).
    try:
        eng.delete_topic(TOPIC)
    finally:
        eng.close()
        shutil.rmtree(directory, ignore_errors=True)


def tidelog_append_run(
    bench: Bench, pool, size: int, n_batches: int, fsync: str = "never", producers: int = 1
) -> Sample:
    d = bench.temp_dir("tidelog")
    eng = open_engine(d, fsync)
    try:
        return tidelog_produce(eng, pool, size, n_batches, bench.p.cap_s, producers)
    finally:
        drop_engine(eng, d)


def tidelog_read(eng: Engine, expect: int, cap_s: float, batch_view: bool) -> Sample:
    """The whole partition with fetch(max_bytes=4 MiB). Batch view: one numpy table per batch, consumed
    vectorised, no Python object per record; else one Record per record (value as bytes), rec.value touched."""
    fetch = eng.fetch
    hw = eng.list_offsets(TOPIC, 0, "latest")
    off = n = total = 0
    clock = Stopwatch(cap_s)
    while off < hw:
        res = fetch(TOPIC, 0, off, max_bytes=FETCH_BYTES)
        if batch_view:
            for view in res.batches():
                table = view.table()
                total += int(table["value_len"].sum())
                n += len(table)
        else:
            for rec in res:
                total += len(rec.value)
                n += 1
        off = res.next_offset
        if clock.expired(off, hw):
            break
    sample = clock.sample(n, total)
    check_count(f"tidelog {'batch' if batch_view else 'record'} read", n, expect, sample.capped)
    return sample


# -- SQLite (WAL, synchronous=OFF) ---------------------------------------------------------------------
def sqlite_open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise RuntimeError(f"SQLite refused WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, key BLOB, value BLOB)")
    return conn


def sqlite_insert(
    conn: sqlite3.Connection, rows_pool: list[list[tuple]], size: int, n_batches: int, cap_s: float
) -> Sample:
    ex, exm = conn.execute, conn.executemany
    sql = "INSERT INTO t (key, value) VALUES (?, ?)"
    npool = len(rows_pool)
    clock = Stopwatch(cap_s)
    for i in clock.count(n_batches):
        ex("BEGIN")
        exm(sql, rows_pool[i % npool])
        ex("COMMIT")
    return clock.sample(clock.done * BATCH, clock.done * BATCH * size)


def sqlite_append_run(bench: Bench, rows_pool, size: int, n_batches: int) -> Sample:
    d = bench.temp_dir("sqlite")
    conn = sqlite_open(os.path.join(d, "bench.db"))
    try:
        return sqlite_insert(conn, rows_pool, size, n_batches, bench.p.cap_s)
    finally:
        conn.close()
        shutil.rmtree(d, ignore_errors=True)


def sqlite_read(conn: sqlite3.Connection, expect: int, cap_s: float) -> Sample:
    n = total = 0
    clock = Stopwatch(cap_s)
    cur = conn.execute("SELECT value FROM t ORDER BY id")
    while True:
        rows = cur.fetchmany(BATCH)
        if not rows:
            break
        for (value,) in rows:
            total += len(value)
            n += 1
        if clock.expired(0, 1):
            break
    cur.close()
    sample = clock.sample(n, total)
    check_count("sqlite read", n, expect, sample.capped)
    return sample


# -- naive length-prefixed file --------------------------------------------------------------------------
_PREFIX = struct.Struct("<I")


def naive_write(path: str, pool, size: int, n_batches: int, cap_s: float, mode: str) -> Sample:
    """mode "record": one f.write(prefix + value) per record; "join": b"".join([prefix + value, ...]) per
    1000 records; "join-zc": the same bytes joined from (prefix, value) pairs without concatenating."""
    pack = _PREFIX.pack
    npool = len(pool)
    with open(path, "wb") as f:
        w = f.write
        clock = Stopwatch(cap_s)
        for i in clock.count(n_batches):
            vals = pool[i % npool]
            if mode == "record":
                for v in vals:
                    w(pack(len(v)) + v)
            elif mode == "join":
                w(b"".join([pack(len(v)) + v for v in vals]))
            else:
                w(b"".join(itertools.chain.from_iterable(zip(map(pack, map(len, vals)), vals))))
        f.flush()
        return clock.sample(clock.done * BATCH, clock.done * BATCH * size)


def naive_append_run(bench: Bench, pool, size: int, n_batches: int, mode: str) -> Sample:
    d = bench.temp_dir("naive")
    try:
        return naive_write(os.path.join(d, "bench.log"), pool, size, n_batches, bench.p.cap_s, mode)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def naive_read(path: str, expect: int, cap_s: float) -> Sample:
    """Read back record by record: 4 MiB readinto a reused buffer, one bytes object per value."""
    unpack_from = _PREFIX.unpack_from
    buf = bytearray(4 * MiB)
    mv = memoryview(buf)
    n = total = carry = 0
    with open(path, "rb", buffering=0) as f:
        clock = Stopwatch(cap_s)
        while True:
            if carry == len(buf):  # a record larger than the buffer: grow it
                buf.extend(bytes(len(buf)))
                mv.release()
                mv = memoryview(buf)
            got = f.readinto(mv[carry:])
            if not got:
                break
            end = carry + got
            pos = 0
            while pos + 4 <= end:
                (ln,) = unpack_from(buf, pos)
                stop = pos + 4 + ln
                if stop > end:
                    break
                value = bytes(mv[pos + 4 : stop])
                total += len(value)
                n += 1
                pos = stop
            carry = end - pos
            if carry:
                mv[:carry] = mv[pos:end]  # memmove
            if clock.expired(0, 1):
                break
        sample = clock.sample(n, total)
    mv.release()
    check_count("naive file read", n, expect, sample.capped)
    return sample


def joined_chunks(pool) -> list[bytes]:
    """Each pool batch as one length-prefixed chunk (the naive file's bytes)."""
    return [b"".join(itertools.chain.from_iterable(zip(map(_PREFIX.pack, map(len, vals)), vals))) for vals in pool]


def raw_sync_run(bench: Bench, pool, size: int, n_batches: int) -> Sample:
    """What one synchronous durable writer can do at best here: the same batches' bytes (pre-joined,
    length-prefixed) pwritten into a preallocated file, fdatasync after each."""
    chunks = joined_chunks(pool)
    d = bench.temp_dir("rawsync")
    fd = os.open(os.path.join(d, "seg.log"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, sum(len(chunks[i % len(chunks)]) for i in range(n_batches)))
        pos = 0
        clock = Stopwatch(bench.p.cap_s)
        for i in clock.count(n_batches):
            c = chunks[i % len(chunks)]
            os.pwrite(fd, c, pos)
            os.fdatasync(fd)
            pos += len(c)
        return clock.sample(clock.done * BATCH, clock.done * BATCH * size)
    finally:
        os.close(fd)
        shutil.rmtree(d, ignore_errors=True)


# -- pwrite vs mmap micro-benchmark --------------------------------------------------------------------
def io_run(bench: Bench, how: str, size: int, chunk: bytes) -> tuple[Sample, Sample]:
    """Append 1 MiB chunks into a fresh ftruncate'd file of `size` bytes, then once more over the same
    (now resident) pages. Returns (first touch, resident)."""
    d = bench.temp_dir("io")
    step = len(chunk)
    fd = os.open(os.path.join(d, "seg.log"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        out = []
        m = (
            None
            if how == "pwrite"
            else mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        )
        try:
            for _ in range(2):
                t0 = time.perf_counter()
                if m is None:
                    for off in range(0, size, step):
                        os.pwrite(fd, chunk, off)
                else:
                    for off in range(0, size, step):
                        m[off : off + step] = chunk
                out.append(Sample(size // step, size, time.perf_counter() - t0))
        finally:
            if m is not None:
                m.close()
        return out[0], out[1]
    finally:
        os.close(fd)
        shutil.rmtree(d, ignore_errors=True)


# -- scenarios -----------------------------------------------------------------------------------------
def run_append(bench: Bench, label: str, size: int, n_records: int, pool) -> None:
    n_batches = n_records // BATCH
    rows_pool = [[(None, v) for v in vals] for vals in pool]
    bench.rounds.run(
        {
            f"append {label}": {
                "tidelog": lambda: tidelog_append_run(bench, pool, size, n_batches),
                "SQLite WAL": lambda: sqlite_append_run(bench, rows_pool, size, n_batches),
                "naive file, 1 write/record": lambda: naive_append_run(bench, pool, size, n_batches, "record"),
                NAIVE_JOIN: lambda: naive_append_run(bench, pool, size, n_batches, "join"),
                "naive file, 1000/write, zero-concat join": lambda: naive_append_run(
                    bench, pool, size, n_batches, "join-zc"
                ),
            }
        }
    )


def run_read(bench: Bench, label: str, size: int, n_records: int, pool) -> None:
    n_batches = n_records // BATCH
    cap = bench.p.cap_s
    rows_pool = [[(None, v) for v in vals] for vals in pool]
    t_dir, s_dir, n_dir = bench.temp_dir("tidelog-read"), bench.temp_dir("sqlite-read"), bench.temp_dir("naive-read")
    eng = conn = None
    try:
        eng = open_engine(t_dir, "never")
        tidelog_produce(eng, pool, size, n_batches, UNCAPPED)
        conn = sqlite_open(os.path.join(s_dir, "bench.db"))
        sqlite_insert(conn, rows_pool, size, n_batches, UNCAPPED)
        del rows_pool  # ~10^5 GC-tracked tuples would otherwise tax every reader's garbage collections
        naive_path = os.path.join(n_dir, "bench.log")
        naive_write(naive_path, pool, size, n_batches, UNCAPPED, "join")
        expect = n_batches * BATCH
        bench.rounds.run(
            {
                f"read {label}": {
                    T_BATCH: lambda: tidelog_read(eng, expect, cap, batch_view=True),
                    T_RECORD: lambda: tidelog_read(eng, expect, cap, batch_view=False),
                    "SQLite WAL, SELECT value ORDER BY id": lambda: sqlite_read(conn, expect, cap),
                    "naive file, record by record": lambda: naive_read(naive_path, expect, cap),
                }
            }
        )
    finally:
        if conn is not None:
            conn.close()
        if eng is not None:
            drop_engine(eng, t_dir)
        for d in (t_dir, s_dir, n_dir):
            shutil.rmtree(d, ignore_errors=True)


def run_durable(bench: Bench, pool) -> None:
    n_batches = bench.p.durable_records // BATCH
    bench.rounds.run(
        {
            "durable append 1 KiB": {
                DUR_A1: lambda: tidelog_append_run(bench, pool, 1024, n_batches, "always"),
                DUR_N1: lambda: tidelog_append_run(bench, pool, 1024, n_batches, "never"),
                # Group commit only has something to group when producers overlap: two threads, one partition.
                DUR_A2: lambda: tidelog_append_run(bench, pool, 1024, n_batches, "always", 2),
                DUR_N2: lambda: tidelog_append_run(bench, pool, 1024, n_batches, "never", 2),
                DUR_RAW: lambda: raw_sync_run(bench, pool, 1024, n_batches),
            }
        }
    )


def run_io(bench: Bench, chunk: bytes) -> None:
    size = bench.p.io_bytes // len(chunk) * len(chunk)
    resident: dict[str, list[Sample]] = {"os.pwrite": [], "mmap copy": []}

    def system(name: str, how: str):
        def go() -> Sample:
            first, again = io_run(bench, how, size, chunk)
            resident[name].append(again)  # the resident pass runs inside the same call
            return first

        return go

    bench.rounds.run(
        {"io first touch": {"os.pwrite": system("os.pwrite", "pwrite"), "mmap copy": system("mmap copy", "mmap")}},
        runs=bench.p.io_runs,
    )
    w = bench.p.warmup
    for name, samples in resident.items():
        bench.rounds.add("io resident", name, samples[w:], samples[:w])


# -- report --------------------------------------------------------------------------------------------
def sections(p: Profile) -> list[Section]:
    vs_tidelog = (Compare("tidelog / this", "tidelog", None, "tidelog"),)
    vs_reads = (
        Compare("batch view / this", T_BATCH, None, "tidelog"),
        Compare("Record / this", T_RECORD, None, "tidelog"),
    )
    return [
        Section(
            "append 1 KiB",
            f'Append, 1 KiB records, {BATCH} per batch, fsync="never" ({p.kib_records:,} records per run)',
            ("MB/s", "records/s"),
            vs_tidelog,
        ),
        Section(
            "append 100 B",
            f'Append, 100 B records, {BATCH} per batch, fsync="never" ({p.small_records:,} records per run)',
            ("records/s", "MB/s"),
            vs_tidelog,
        ),
        Section("read 1 KiB", f"Read back, 1 KiB records ({p.kib_records:,})", ("records/s", "MB/s"), vs_reads),
        Section("read 100 B", f"Read back, 100 B records ({p.small_records:,})", ("records/s", "MB/s"), vs_reads),
        Section(
            "durable append 1 KiB",
            f"Durable append, 1 KiB records, {BATCH} per batch, fsync before "
            f"produce returns ({p.durable_records:,} records per run)",
            ("MB/s", "records/s"),
            (Compare('this / fsync="never", 1 producer', None, DUR_N1),),
        ),
        Section(
            "io first touch",
            f"Segment write path: 1 MiB chunks into a fresh ftruncate'd {p.io_bytes // MiB} MiB file (first touch)",
            ("GB/s",),
            (Compare("pwrite / this", "os.pwrite", None),),
        ),
        Section(
            "io resident",
            "Segment write path: the same file written again (pages resident)",
            ("GB/s",),
            (Compare("pwrite / this", "os.pwrite", None),),
        ),
    ]


def targets(r: Rounds) -> list[tuple]:
    """our performance targets for the embedded engine: (section, name, measured, goal, unit)."""
    dur = "durable append 1 KiB"
    return [
        ("append 1 KiB", "append 1 KiB: throughput", r.median("append 1 KiB", "tidelog", "MB/s"), 1000.0, "MB/s"),
        (
            "append 1 KiB",
            "append 1 KiB: tidelog / SQLite WAL",
            r.paired("append 1 KiB", "tidelog", "SQLite WAL"),
            5.0,
            "x",
        ),
        (
            "append 1 KiB",
            "append 1 KiB: tidelog / naive batched file (1000 records joined/write)",
            r.paired("append 1 KiB", "tidelog", NAIVE_JOIN),
            1.5,
            "x",
        ),
        ("append 100 B", "append 100 B: records/s", r.median("append 100 B", "tidelog", "records/s"), 3e6, "records/s"),
        (
            "read 1 KiB",
            "read 1 KiB, batch view: records/s",
            r.median("read 1 KiB", T_BATCH, "records/s"),
            10e6,
            "records/s",
        ),
        (
            "read 100 B",
            "read 100 B, batch view: records/s",
            r.median("read 100 B", T_BATCH, "records/s"),
            10e6,
            "records/s",
        ),
        (
            "read 1 KiB",
            "read 1 KiB, Record objects: records/s",
            r.median("read 1 KiB", T_RECORD, "records/s"),
            2e6,
            "records/s",
        ),
        (
            "read 100 B",
            "read 100 B, Record objects: records/s",
            r.median("read 100 B", T_RECORD, "records/s"),
            2e6,
            "records/s",
        ),
        (dur, "durable 1 KiB: always / never, 1 producer", r.paired(dur, DUR_A1, DUR_N1), 0.5, "x"),
        (dur, "durable 1 KiB: always with 2 producers / never with 1", r.paired(dur, DUR_A2, DUR_N1), 0.5, "x"),
    ]


def report(bench: Bench, info: dict, elapsed: float) -> tuple[str, dict]:
    p, r = bench.p, bench.rounds
    out = [
        f"# tidelog embedded benchmark ({p.name})",
        "",
        "- " + machine_line(info, f"numpy {info['numpy']}", f"SQLite {info['sqlite']}"),
        f"- malloc: {info['malloc']}; data under {info['tmp_dir']}",
        f"- medians of {p.runs} runs after {p.warmup} warm-up round(s), systems interleaved round by round; "
        "min - max across runs; ratios: ratio of medians (min - max of per-round ratios)",
        "- MB/s and GB/s: 10^6 / 10^9 bytes of record payload per second",
        '- tidelog append: Engine.produce(topic, values, partition=0), fsync="never", 1 partition, '
        "segment_bytes=1 GiB, no compression, fresh data dir per run",
        f"- SQLite: journal_mode=WAL, synchronous=OFF, BEGIN + executemany({BATCH} rows) + COMMIT into "
        "t(id INTEGER PRIMARY KEY, key BLOB, value BLOB), key NULL",
        "- reads: one data set per system, appended once, read whole each run (tidelog: fetch max_bytes=4 MiB); "
        "page cache warm, the warm-up round maps it",
        "",
    ]
    lines, results = sections_report(r, sections(p))
    out += lines
    extra = [
        x
        for x in (r.paired("durable append 1 KiB", DUR_A2, DUR_N2), r.paired("durable append 1 KiB", DUR_A1, DUR_RAW))
        if x
    ]
    if extra:
        out += ["| other ratio | median (per-round min - max) |", "|---|---:|"]
        out += [
            f"| {x['numerator']} / {x['denominator']} | {x['ratio']:.2f}x ({x['paired_min']:.2f}-"
            f"{x['paired_max']:.2f}) |"
            for x in extra
        ]
        out.append("")
        results["ratios"] += extra
    lines, results["targets"] = targets_table(targets(r), r.sections())
    out += lines + ["", f"Total benchmark time: {elapsed:.0f} s"]
    results["elapsed_s"] = elapsed
    results["cpu"] = r.meter.sections
    return "\n".join(out), results


# -- main ----------------------------------------------------------------------------------------------
def run(profile: Profile, tmp: str, only: set[str], tuned: bool) -> tuple[str, dict]:
    """Measure the parts in `only`; the Markdown report and the JSON document."""
    info = machine_info(tmp, tuned, numpy=np.__version__, sqlite=sqlite3.sqlite_version)
    announce(info)
    started = time.perf_counter()
    bench = Bench(profile, tmp)
    log("building payloads...")
    pool_kib = make_pool(profile.pool_kib_batches, 1024, SEED)
    pool_small = make_pool(profile.pool_small_batches, 100, SEED + 1)
    if "append" in only:
        run_append(bench, "1 KiB", 1024, profile.kib_records, pool_kib)
        run_append(bench, "100 B", 100, profile.small_records, pool_small)
    if "read" in only:
        run_read(bench, "1 KiB", 1024, profile.kib_records, pool_kib)
        run_read(bench, "100 B", 100, profile.small_records, pool_small)
    if "durable" in only:
        run_durable(bench, pool_kib)
    if "io" in only:
        run_io(bench, b"".join(pool_kib[0])[:MiB])
    text, results = report(bench, info, time.perf_counter() - started)
    return text, {
        "machine": info,
        "profile": dataclasses.asdict(profile),
        "batch_records": BATCH,
        "segment_bytes": SEGMENT_BYTES,
        "fetch_max_bytes": FETCH_BYTES,
        "fsync": "never",
        **results,
    }


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("python -m benchmarks.embedded", __doc__, "small data sets, 3 runs (under ~2 minutes)")
    ap.add_argument("--default-malloc", action="store_true", help="skip the glibc mallopt tuning our entry points use")
    ap.add_argument(
        "--only", default="append,read,durable,io", help="comma-separated subset of: append, read, durable, io"
    )
    args = ap.parse_args(argv)
    profile = cli.profile(ap, args, QUICK, DEFAULT, runs_fields=("runs", "io_runs"))
    only = cli.subset(ap, "--only part(s)", args.only, PARTS)
    os.makedirs(args.tmp, exist_ok=True)
    tuned = False if args.default_malloc else tune_malloc()
    text, doc = run(profile, os.path.abspath(args.tmp), only, tuned)
    return cli.finish(text, args.json, doc)


if __name__ == "__main__":
    sys.exit(main())
