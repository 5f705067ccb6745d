"""Embedded-engine benchmark: tidelog append/read vs SQLite WAL and a naive length-prefixed file.

    python -m benchmarks.embedded [--quick] [--json PATH] [--runs N] [--tmp DIR] [--default-malloc]

Every scenario runs its baselines in the same invocation, interleaved run by run (the order rotates each
round), so machine drift hits all systems alike. Each figure is the median of >= 3 timed runs after a
warm-up round, with min and max; ratios are tidelog / baseline (ratio of medians, plus the min and max of
the per-round paired ratios). See benchmarks/README.md. This is a measuring script: it asserts nothing
about speed.

Units: MB/s and GB/s are decimal (10^6 / 10^9 bytes of record payload per second); "1 KiB" records carry
exactly 1024 payload bytes, "100 B" records exactly 100.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import itertools
import json
import mmap
import os
import platform
import shutil
import sqlite3
import statistics
import struct
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

import tidelog
from tidelog import Engine

MiB = 1 << 20
BATCH = 1000  # records per produce / transaction / batched write
SEGMENT_BYTES = 1 << 30  # one segment holds a whole run: no rolling is measured
FETCH_BYTES = 4 * MiB
TOPIC = "bench"
SEED = 20240611

# System names (also the keys of the JSON output)
T_BATCH = "tidelog, batch view (table)"
T_RECORD = "tidelog, Record per record"
NAIVE_JOIN = "naive file, 1000 records joined/write"
DUR_A1 = 'tidelog fsync="always", 1 producer'
DUR_N1 = 'tidelog fsync="never", 1 producer'
DUR_A2 = 'tidelog fsync="always", 2 producer threads'
DUR_N2 = 'tidelog fsync="never", 2 producer threads'
DUR_RAW = "raw os.pwrite + os.fdatasync per batch (ceiling, 1 writer)"

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


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


QUICK = Profile("quick", runs=3, warmup=1, kib_records=128_000, small_records=1_000_000, durable_records=64_000,
                pool_kib_batches=32, pool_small_batches=64, io_bytes=256 * MiB, io_runs=3, cap_s=10.0)
DEFAULT = Profile("default", runs=5, warmup=1, kib_records=384_000, small_records=2_000_000,
                  durable_records=256_000, pool_kib_batches=64, pool_small_batches=128, io_bytes=512 * MiB,
                  io_runs=5, cap_s=30.0)


# -- machine -------------------------------------------------------------------------------------------
def machine_info(tmp: str, malloc_tuned: bool) -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)
    except (ValueError, OSError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": mem_gib,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "tidelog": tidelog.__version__,
        "tmp_dir": tmp,
        "malloc": ("glibc mallopt M_MMAP_THRESHOLD=16 MiB, M_TRIM_THRESHOLD=256 MiB" if malloc_tuned
                   else "default"),
    }


def tune_malloc() -> bool:
    """What PERF.md asks of entry points: keep >=128 KiB buffers in the heap instead of fresh mmaps."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 16 * MiB)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 256 * MiB))
    except (OSError, AttributeError):
        return False


# -- payloads ------------------------------------------------------------------------------------------
def make_pool(n_batches: int, size: int, seed: int) -> list[list[bytes]]:
    """n_batches lists of BATCH distinct JSON-like records of exactly `size` bytes (seeded).

    Payload text is drawn from a 256-word vocabulary: compressible-ish (lz4 ~2-3x), not constant.
    """
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    vocab = [letters[rng.integers(0, 26, size=int(k))].tobytes() for k in rng.integers(3, 11, size=256)]
    corpus = b" ".join(vocab[i] for i in rng.integers(0, 256, size=1 << 19))  # ~3.5 MB of words
    events = [b"click", b"view", b"purchase", b"signup", b"logout", b"search"]
    n = n_batches * BATCH
    users = rng.integers(0, 100_000, size=n).tolist()
    kinds = rng.integers(0, len(events), size=n).tolist()
    starts = rng.integers(0, len(corpus) - size, size=n).tolist()
    ts0 = 1_700_000_000_000
    out: list[bytes] = []
    for i in range(n):
        if size >= 200:
            head = b'{"id":%d,"ts":%d,"user":"u%05d","event":"%s","region":"eu-west-1","payload":"' % (
                i, ts0 + i * 7, users[i], events[kinds[i]])
        else:
            head = b'{"id":%d,"u":"u%05d","e":"%s","p":"' % (i, users[i], events[kinds[i]])
        fill = size - len(head) - 2
        value = head + corpus[starts[i]:starts[i] + fill] + b'"}'
        assert len(value) == size
        out.append(value)
    return [out[i:i + BATCH] for i in range(0, n, BATCH)]


# -- measurement primitives ----------------------------------------------------------------------------
@dataclass
class Sample:
    records: int
    nbytes: int
    seconds: float
    capped: bool = False

    @property
    def rps(self) -> float:
        return self.records / self.seconds

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6


@dataclass
class Series:
    section: str
    system: str
    metric: str  # "records/s" or "MB/s" or "GB/s"
    samples: list[Sample] = field(default_factory=list)
    warmups: list[Sample] = field(default_factory=list)

    def values(self, samples=None) -> list[float]:
        samples = self.samples if samples is None else samples
        if self.metric == "records/s":
            return [s.rps for s in samples]
        if self.metric == "MB/s":
            return [s.mbps for s in samples]
        return [s.mbps / 1e3 for s in samples]  # GB/s

    @property
    def median(self) -> float:
        return statistics.median(self.values())

    def summary(self) -> dict:
        vals = self.values()
        return {"section": self.section, "system": self.system, "metric": self.metric,
                "median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals,
                "warmup": self.values(self.warmups), "capped_runs": sum(s.capped for s in self.samples),
                "records_per_run": [s.records for s in self.samples],
                "payload_bytes_per_run": [s.nbytes for s in self.samples],
                "seconds": [s.seconds for s in self.samples]}


def quiesce() -> None:
    """Before each round: write back whatever earlier rounds (or data-set setup) left dirty, so that
    writeback does not overlap the timed loops. Untimed."""
    os.sync()


class Bench:
    def __init__(self, profile: Profile, tmp: str) -> None:
        self.p = profile
        self.tmp = tmp
        self.series: dict[tuple[str, str], list[Sample]] = {}
        self.warmups: dict[tuple[str, str], list[Sample]] = {}
        self.order: list[tuple[str, str]] = []

    def rounds(self, section: str, systems: dict[str, Callable[[], Sample]], runs: int | None = None,
               warmup: int | None = None) -> None:
        """Run every system once per round, rotating the order; the first `warmup` rounds are discarded."""
        runs = self.p.runs if runs is None else runs
        warmup = self.p.warmup if warmup is None else warmup
        names = list(systems)
        for name in names:
            key = (section, name)
            if key not in self.series:
                self.series[key] = []
                self.warmups[key] = []
                self.order.append(key)
        for r in range(warmup + runs):
            quiesce()
            k = r % len(names)
            for name in names[k:] + names[:k]:
                gc.collect()
                sample = systems[name]()
                (self.warmups if r < warmup else self.series)[(section, name)].append(sample)
            print(f"  {section}: round {r + 1}/{warmup + runs}{' (warm-up)' if r < warmup else ''} done",
                  file=sys.stderr, flush=True)

    def samples(self, section: str, system: str) -> list[Sample]:
        return self.series[(section, system)]

    def temp_dir(self, what: str) -> str:
        return tempfile.mkdtemp(prefix=f"tidelog-bench-{what}-", dir=self.tmp)


# -- tidelog -------------------------------------------------------------------------------------------
def open_engine(directory: str, fsync: str) -> Engine:
    eng = Engine.open(directory, fsync=fsync)
    eng.create_topic(TOPIC, 1, segment_bytes=SEGMENT_BYTES)
    return eng


def tidelog_produce(eng: Engine, pool: list[list[bytes]], size: int, n_batches: int, cap_s: float,
                    producers: int = 1) -> Sample:
    """produce() n_batches batches of BATCH records; with producers > 1, that many threads share the
    batches (round robin) and append to the same partition concurrently."""
    produce = eng.produce
    npool = len(pool)
    counts = [0] * producers
    capped = [False] * producers

    def work(k: int, deadline: float) -> None:
        done = 0
        for i in range(k, n_batches, producers):
            produce(TOPIC, pool[i % npool], partition=0)
            done += 1
            if time.perf_counter() > deadline:
                capped[k] = i + producers < n_batches
                break
        counts[k] = done

    t0 = time.perf_counter()
    if producers == 1:
        work(0, t0 + cap_s)
    else:
        threads = [threading.Thread(target=work, args=(k, t0 + cap_s)) for k in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    dt = time.perf_counter() - t0
    done = sum(counts)
    return Sample(done * BATCH, done * BATCH * size, dt, any(capped))


def drop_engine(eng: Engine, directory: str) -> None:
    # Deleting the topic first drops its dirty pages instead of fsyncing them on close (saves time
    # between runs; nothing here is timed).
    try:
        eng.delete_topic(TOPIC)
    finally:
        eng.close()
        shutil.rmtree(directory, ignore_errors=True)


def tidelog_append_run(bench: Bench, pool, size: int, n_batches: int, fsync: str = "never",
                       producers: int = 1) -> Sample:
    d = bench.temp_dir("tidelog")
    eng = open_engine(d, fsync)
    try:
        return tidelog_produce(eng, pool, size, n_batches, bench.p.cap_s, producers)
    finally:
        drop_engine(eng, d)


def tidelog_read_batches(eng: Engine, expect: int, cap_s: float) -> Sample:
    """Batch view: one numpy table per batch, consumed vectorised; no Python object per record."""
    fetch = eng.fetch
    hw = eng.list_offsets(TOPIC, 0, "latest")
    off = n = total = 0
    t0 = time.perf_counter()
    deadline = t0 + cap_s
    capped = False
    while off < hw:
        res = fetch(TOPIC, 0, off, max_bytes=FETCH_BYTES)
        for view in res.batches():
            table = view.table()
            total += int(table["value_len"].sum())
            n += len(table)
        off = res.next_offset
        if time.perf_counter() > deadline:
            capped = off < hw
            break
    dt = time.perf_counter() - t0
    check_count("tidelog batch read", n, expect, capped)
    return Sample(n, total, dt, capped)


def tidelog_read_records(eng: Engine, expect: int, cap_s: float) -> Sample:
    """One Record object per record (value as bytes, the default copy=True), touching rec.value."""
    fetch = eng.fetch
    hw = eng.list_offsets(TOPIC, 0, "latest")
    off = n = total = 0
    t0 = time.perf_counter()
    deadline = t0 + cap_s
    capped = False
    while off < hw:
        res = fetch(TOPIC, 0, off, max_bytes=FETCH_BYTES)
        for rec in res:
            total += len(rec.value)
            n += 1
        off = res.next_offset
        if time.perf_counter() > deadline:
            capped = off < hw
            break
    dt = time.perf_counter() - t0
    check_count("tidelog record read", n, expect, capped)
    return Sample(n, total, dt, capped)


# -- SQLite (WAL, synchronous=OFF) ---------------------------------------------------------------------
def sqlite_open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise RuntimeError(f"SQLite refused WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, key BLOB, value BLOB)")
    return conn


def sqlite_insert(conn: sqlite3.Connection, rows_pool: list[list[tuple]], size: int, n_batches: int,
                  cap_s: float) -> Sample:
    ex = conn.execute
    exm = conn.executemany
    sql = "INSERT INTO t (key, value) VALUES (?, ?)"
    npool = len(rows_pool)
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + cap_s
    capped = False
    for i in range(n_batches):
        ex("BEGIN")
        exm(sql, rows_pool[i % npool])
        ex("COMMIT")
        done += 1
        if time.perf_counter() > deadline:
            capped = done < n_batches
            break
    dt = time.perf_counter() - t0
    return Sample(done * BATCH, done * BATCH * size, dt, capped)


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
    t0 = time.perf_counter()
    deadline = t0 + cap_s
    capped = False
    cur = conn.execute("SELECT value FROM t ORDER BY id")
    while True:
        rows = cur.fetchmany(BATCH)
        if not rows:
            break
        for (value,) in rows:
            total += len(value)
            n += 1
        if time.perf_counter() > deadline:
            capped = True
            break
    cur.close()
    dt = time.perf_counter() - t0
    check_count("sqlite read", n, expect, capped)
    return Sample(n, total, dt, capped)


# -- naive length-prefixed file --------------------------------------------------------------------------
_PREFIX = struct.Struct("<I")


def naive_write(path: str, pool, size: int, n_batches: int, cap_s: float, mode: str) -> Sample:
    """mode "record": one f.write(prefix + value) per record; "join": b"".join([prefix + value, ...]) per
    1000 records; "join-zc": the same bytes joined from (prefix, value) pairs without concatenating."""
    pack = _PREFIX.pack
    npool = len(pool)
    done = 0
    capped = False
    with open(path, "wb") as f:
        w = f.write
        t0 = time.perf_counter()
        deadline = t0 + cap_s
        for i in range(n_batches):
            vals = pool[i % npool]
            if mode == "record":
                for v in vals:
                    w(pack(len(v)) + v)
            elif mode == "join":
                w(b"".join([pack(len(v)) + v for v in vals]))
            else:
                w(b"".join(itertools.chain.from_iterable(zip(map(pack, map(len, vals)), vals))))
            done += 1
            if time.perf_counter() > deadline:
                capped = done < n_batches
                break
        f.flush()
        dt = time.perf_counter() - t0
    return Sample(done * BATCH, done * BATCH * size, dt, capped)


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
    capped = False
    with open(path, "rb", buffering=0) as f:
        t0 = time.perf_counter()
        deadline = t0 + cap_s
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
                value = bytes(mv[pos + 4:stop])
                total += len(value)
                n += 1
                pos = stop
            carry = end - pos
            if carry:
                mv[:carry] = mv[pos:end]  # memmove
            if time.perf_counter() > deadline:
                capped = True
                break
        dt = time.perf_counter() - t0
    mv.release()
    check_count("naive file read", n, expect, capped)
    return Sample(n, total, dt, capped)


def check_count(what: str, got: int, expect: int, capped: bool) -> None:
    if got != expect and not capped:
        raise RuntimeError(f"{what}: read {got} records, expected {expect}")


# -- pwrite vs mmap micro-benchmark --------------------------------------------------------------------
def io_run(bench: Bench, how: str, size: int, chunk: bytes) -> tuple[Sample, Sample]:
    """Append 1 MiB chunks into a fresh ftruncate'd file of `size` bytes, then once more over the same
    (now resident) pages. Returns (first touch, resident)."""
    d = bench.temp_dir("io")
    path = os.path.join(d, "seg.log")
    step = len(chunk)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        out = []
        if how == "pwrite":
            pw = os.pwrite
            for _ in range(2):
                t0 = time.perf_counter()
                for off in range(0, size, step):
                    pw(fd, chunk, off)
                out.append(Sample(size // step, size, time.perf_counter() - t0))
        else:
            m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                for _ in range(2):
                    t0 = time.perf_counter()
                    for off in range(0, size, step):
                        m[off:off + step] = chunk
                    out.append(Sample(size // step, size, time.perf_counter() - t0))
            finally:
                m.close()
        return out[0], out[1]
    finally:
        os.close(fd)
        shutil.rmtree(d, ignore_errors=True)


# -- scenarios -----------------------------------------------------------------------------------------
def run_append(bench: Bench, label: str, size: int, n_records: int, pool) -> None:
    n_batches = n_records // BATCH
    rows_pool = [[(None, v) for v in vals] for vals in pool]
    systems = {
        "tidelog": lambda: tidelog_append_run(bench, pool, size, n_batches),
        "SQLite WAL": lambda: sqlite_append_run(bench, rows_pool, size, n_batches),
        "naive file, 1 write/record": lambda: naive_append_run(bench, pool, size, n_batches, "record"),
        NAIVE_JOIN: lambda: naive_append_run(bench, pool, size, n_batches, "join"),
        "naive file, 1000/write, zero-concat join": lambda: naive_append_run(bench, pool, size, n_batches,
                                                                             "join-zc"),
    }
    bench.rounds(f"append {label}", systems)


def run_read(bench: Bench, label: str, size: int, n_records: int, pool) -> None:
    n_batches = n_records // BATCH
    cap = bench.p.cap_s
    rows_pool = [[(None, v) for v in vals] for vals in pool]
    t_dir, s_dir, n_dir = bench.temp_dir("tidelog-read"), bench.temp_dir("sqlite-read"), bench.temp_dir("naive-read")
    eng = conn = None
    try:
        eng = open_engine(t_dir, "never")
        big = 1e9  # building the data set is not capped
        tidelog_produce(eng, pool, size, n_batches, big)
        conn = sqlite_open(os.path.join(s_dir, "bench.db"))
        sqlite_insert(conn, rows_pool, size, n_batches, big)
        del rows_pool  # ~10^5 GC-tracked tuples would otherwise tax every reader's garbage collections
        naive_path = os.path.join(n_dir, "bench.log")
        naive_write(naive_path, pool, size, n_batches, big, "join")
        expect = n_batches * BATCH
        systems = {
            T_BATCH: lambda: tidelog_read_batches(eng, expect, cap),
            T_RECORD: lambda: tidelog_read_records(eng, expect, cap),
            "SQLite WAL, SELECT value ORDER BY id": lambda: sqlite_read(conn, expect, cap),
            "naive file, record by record": lambda: naive_read(naive_path, expect, cap),
        }
        bench.rounds(f"read {label}", systems)
    finally:
        if conn is not None:
            conn.close()
        if eng is not None:
            drop_engine(eng, t_dir)
        for d in (t_dir, s_dir, n_dir):
            shutil.rmtree(d, ignore_errors=True)


def raw_sync_run(bench: Bench, pool, size: int, n_batches: int) -> Sample:
    """What one synchronous durable writer can do at best here: the same batches' bytes (pre-joined,
    length-prefixed) pwritten into a preallocated file, fdatasync after each."""
    chunks = [b"".join(itertools.chain.from_iterable(zip(map(_PREFIX.pack, map(len, vals)), vals)))
              for vals in pool]
    d = bench.temp_dir("rawsync")
    path = os.path.join(d, "seg.log")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, sum(len(chunks[i % len(chunks)]) for i in range(n_batches)))
        pos = done = 0
        capped = False
        t0 = time.perf_counter()
        deadline = t0 + bench.p.cap_s
        for i in range(n_batches):
            c = chunks[i % len(chunks)]
            os.pwrite(fd, c, pos)
            os.fdatasync(fd)
            pos += len(c)
            done += 1
            if time.perf_counter() > deadline:
                capped = done < n_batches
                break
        dt = time.perf_counter() - t0
        return Sample(done * BATCH, done * BATCH * size, dt, capped)
    finally:
        os.close(fd)
        shutil.rmtree(d, ignore_errors=True)


def run_durable(bench: Bench, pool) -> None:
    n_batches = bench.p.durable_records // BATCH
    systems = {
        DUR_A1: lambda: tidelog_append_run(bench, pool, 1024, n_batches, "always"),
        DUR_N1: lambda: tidelog_append_run(bench, pool, 1024, n_batches, "never"),
        # Group commit only has something to group when producers overlap: two threads, one partition.
        DUR_A2: lambda: tidelog_append_run(bench, pool, 1024, n_batches, "always", 2),
        DUR_N2: lambda: tidelog_append_run(bench, pool, 1024, n_batches, "never", 2),
        DUR_RAW: lambda: raw_sync_run(bench, pool, 1024, n_batches),
    }
    bench.rounds("durable append 1 KiB", systems)


def run_io(bench: Bench, chunk: bytes) -> None:
    size = bench.p.io_bytes // len(chunk) * len(chunk)
    pending: dict[str, Sample] = {}

    def first(how: str) -> Callable[[], Sample]:
        def go() -> Sample:
            a, b = io_run(bench, how, size, chunk)
            pending[how] = b
            return a
        return go

    # The resident pass runs inside the same call as the first-touch pass; record both.
    systems = {"os.pwrite": first("pwrite"), "mmap copy": first("mmap")}
    names = list(systems)
    runs, warmup = bench.p.io_runs, bench.p.warmup
    for key in [("io first touch", n) for n in names] + [("io resident", n) for n in names]:
        bench.series.setdefault(key, [])
        bench.warmups.setdefault(key, [])
        if key not in bench.order:
            bench.order.append(key)
    for r in range(warmup + runs):
        quiesce()
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            a = systems[name]()
            b = pending.pop("pwrite" if name == "os.pwrite" else "mmap")
            target = bench.warmups if r < warmup else bench.series
            target[("io first touch", name)].append(a)
            target[("io resident", name)].append(b)
        print(f"  io: round {r + 1}/{warmup + runs}{' (warm-up)' if r < warmup else ''} done",
              file=sys.stderr, flush=True)


# -- report --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compare:
    """A ratio column: numerator / denominator, where None stands for the row's own system."""

    label: str
    numerator: str | None
    denominator: str | None
    skip_prefix: str = ""  # rows whose system starts with this get no value


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    metrics: tuple[str, ...]
    compares: tuple[Compare, ...] = ()


def sections(p: Profile) -> list[Section]:
    vs_tidelog = (Compare("tidelog / this", "tidelog", None, "tidelog"),)
    vs_reads = (Compare("batch view / this", T_BATCH, None, "tidelog"),
                Compare("Record / this", T_RECORD, None, "tidelog"))
    return [
        Section("append 1 KiB", f"Append, 1 KiB records, {BATCH} per batch, fsync=\"never\" "
                f"({p.kib_records:,} records per run)", ("MB/s", "records/s"), vs_tidelog),
        Section("append 100 B", f"Append, 100 B records, {BATCH} per batch, fsync=\"never\" "
                f"({p.small_records:,} records per run)", ("records/s", "MB/s"), vs_tidelog),
        Section("read 1 KiB", f"Read back, 1 KiB records ({p.kib_records:,})", ("records/s", "MB/s"), vs_reads),
        Section("read 100 B", f"Read back, 100 B records ({p.small_records:,})", ("records/s", "MB/s"), vs_reads),
        Section("durable append 1 KiB", f"Durable append, 1 KiB records, {BATCH} per batch, fsync before "
                f"produce returns ({p.durable_records:,} records per run)", ("MB/s", "records/s"),
                (Compare('this / fsync="never", 1 producer', None, DUR_N1),)),
        Section("io first touch", f"Segment write path: 1 MiB chunks into a fresh ftruncate'd "
                f"{p.io_bytes // MiB} MiB file (first touch)", ("GB/s",),
                (Compare("pwrite / this", "os.pwrite", None),)),
        Section("io resident", "Segment write path: the same file written again (pages resident)", ("GB/s",),
                (Compare("pwrite / this", "os.pwrite", None),)),
    ]


def fmt(v: float, metric: str) -> str:
    if metric == "records/s":
        return f"{v / 1e6:.3f} M"
    if metric == "GB/s":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def paired(bench: Bench, section: str, a: str, b: str, metric: str) -> dict:
    va = Series(section, a, metric, bench.samples(section, a)).values()
    vb = Series(section, b, metric, bench.samples(section, b)).values()
    per_round = [x / y for x, y in zip(va, vb)]
    return {"section": section, "numerator": a, "denominator": b, "metric": metric,
            "ratio": statistics.median(va) / statistics.median(vb),
            "paired_min": min(per_round), "paired_max": max(per_round), "paired": per_round}


def fmt_ratio(r: dict) -> str:
    return f"{r['ratio']:.2f}x ({r['paired_min']:.2f}-{r['paired_max']:.2f})"


def section_table(bench: Bench, sec: Section, ratios: list) -> list[str]:
    head = ["system"]
    for m in sec.metrics:
        head += [f"{m} median", "min - max"]
    head += [c.label for c in sec.compares]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    systems = [name for key, name in bench.order if key == sec.key]
    for system in systems:
        samples = bench.samples(sec.key, system)
        row = [system + (" (capped)" if any(x.capped for x in samples) else "")]
        for m in sec.metrics:
            vals = Series(sec.key, system, m, samples).values()
            row += [fmt(statistics.median(vals), m), f"{fmt(min(vals), m)} - {fmt(max(vals), m)}"]
        for c in sec.compares:
            num = c.numerator or system
            den = c.denominator or system
            if num == den or (c.skip_prefix and system.startswith(c.skip_prefix)) or \
                    num not in systems or den not in systems:
                row.append("")
                continue
            r = paired(bench, sec.key, num, den, sec.metrics[0])
            ratios.append(r)
            row.append(fmt_ratio(r))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def report(bench: Bench, info: dict, elapsed: float) -> tuple[str, dict]:
    p = bench.p
    out = [
        f"# tidelog embedded benchmark ({p.name})",
        "",
        f"- machine: nproc={info['nproc']}, {info['cpu_model']}, {info['memory_gib']} GiB RAM, "
        f"Linux {info['kernel']}; Python {info['python']}, numpy {info['numpy']}, SQLite {info['sqlite']}, "
        f"tidelog {info['tidelog']}",
        f"- malloc: {info['malloc']}; data under {info['tmp_dir']}",
        f"- medians of {p.runs} runs after {p.warmup} warm-up round(s), systems interleaved round by round; "
        "min - max across runs; ratios: ratio of medians (min - max of per-round ratios)",
        "- MB/s and GB/s: 10^6 / 10^9 bytes of record payload per second",
        f"- tidelog append: Engine.produce(topic, values, partition=0), fsync=\"never\", 1 partition, "
        f"segment_bytes=1 GiB, no compression, fresh data dir per run",
        f"- SQLite: journal_mode=WAL, synchronous=OFF, BEGIN + executemany({BATCH} rows) + COMMIT into "
        "t(id INTEGER PRIMARY KEY, key BLOB, value BLOB), key NULL",
        "- reads: one data set per system, appended once, read whole each run (tidelog: fetch max_bytes=4 MiB); "
        "page cache warm, the warm-up round maps it",
        "",
    ]
    results: dict = {"series": [], "ratios": [], "targets": []}
    have = set(bench.order)
    for sec in sections(p):
        if not any(key == sec.key for key, _ in bench.order):
            continue
        out += [f"## {sec.title}", ""]
        out += section_table(bench, sec, results["ratios"])
        out.append("")
        for key, system in bench.order:
            if key == sec.key:
                for m in sec.metrics:
                    results["series"].append(Series(key, system, m, bench.samples(key, system),
                                                    bench.warmups[(key, system)]).summary())

    extra = []
    if ("durable append 1 KiB", DUR_A1) in have:
        extra.append(paired(bench, "durable append 1 KiB", DUR_A2, DUR_N2, "MB/s"))
        extra.append(paired(bench, "durable append 1 KiB", DUR_A1, DUR_RAW, "MB/s"))
    if extra:
        out += ["| other ratio | median (per-round min - max) |", "|---|---:|"]
        out += [f"| {r['numerator']} / {r['denominator']} | {fmt_ratio(r)} |" for r in extra]
        out.append("")
        results["ratios"] += extra

    def med(section, system, metric):
        if (section, system) not in have:
            return None
        return Series(section, system, metric, bench.samples(section, system)).median

    def ratio(section, a, b):
        if (section, a) not in have or (section, b) not in have:
            return None
        return paired(bench, section, a, b, "MB/s")["ratio"]

    targets = [  # shared/PERF.md
        ("append 1 KiB: throughput", med("append 1 KiB", "tidelog", "MB/s"), 1000.0, "MB/s"),
        ("append 1 KiB: tidelog / SQLite WAL", ratio("append 1 KiB", "tidelog", "SQLite WAL"), 5.0, "x"),
        ("append 1 KiB: tidelog / naive batched file (1000 records joined/write)",
         ratio("append 1 KiB", "tidelog", NAIVE_JOIN), 1.5, "x"),
        ("append 100 B: records/s", med("append 100 B", "tidelog", "records/s"), 3e6, "records/s"),
        ("read 1 KiB, batch view: records/s", med("read 1 KiB", T_BATCH, "records/s"), 10e6, "records/s"),
        ("read 100 B, batch view: records/s", med("read 100 B", T_BATCH, "records/s"), 10e6, "records/s"),
        ("read 1 KiB, Record objects: records/s", med("read 1 KiB", T_RECORD, "records/s"), 2e6, "records/s"),
        ("read 100 B, Record objects: records/s", med("read 100 B", T_RECORD, "records/s"), 2e6, "records/s"),
        ("durable 1 KiB: always / never, 1 producer", ratio("durable append 1 KiB", DUR_A1, DUR_N1), 0.5, "x"),
        ("durable 1 KiB: always with 2 producers / never with 1",
         ratio("durable append 1 KiB", DUR_A2, DUR_N1), 0.5, "x"),
    ]
    rows = [(n, v, g, u) for n, v, g, u in targets if v is not None]
    if rows:
        out += ["## Targets (shared/PERF.md)", "", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    for name, value, goal, unit in rows:
        if unit == "x":
            shown, want = f"{value:.2f}x", f"{goal:.2f}x"
        elif unit == "MB/s":
            shown, want = f"{value:,.0f} MB/s", f"{goal:,.0f} MB/s"
        else:
            shown, want = fmt(value, unit), fmt(goal, unit)
        met = value >= goal
        out.append(f"| {name} | {shown} | >= {want} | {'yes' if met else 'NO'} |")
        results["targets"].append({"target": name, "measured": value, "goal": goal, "unit": unit, "met": met})
    out += ["", f"Total benchmark time: {elapsed:.0f} s"]
    results["elapsed_s"] = elapsed
    return "\n".join(out), results


# -- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.embedded", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data sets, 3 runs (under ~2 minutes)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure (all runs) as JSON here")
    ap.add_argument("--runs", type=int, help="timed runs per figure (>= 3; default 5, or 3 with --quick)")
    ap.add_argument("--tmp", default="/tmp", help="parent directory of the temporary data (default /tmp)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="skip the glibc mallopt tuning PERF.md prescribes for entry points")
    ap.add_argument("--only", default="append,read,durable,io",
                    help="comma-separated subset of: append, read, durable, io")
    args = ap.parse_args(argv)
    profile = QUICK if args.quick else DEFAULT
    if args.runs is not None:
        if args.runs < 3:
            ap.error("--runs must be at least 3")
        profile = Profile(**{**asdict(profile), "runs": args.runs, "io_runs": args.runs})
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - {"append", "read", "durable", "io"}
    if unknown:
        ap.error(f"unknown --only part(s): {', '.join(sorted(unknown))}")
    os.makedirs(args.tmp, exist_ok=True)

    tuned = False if args.default_malloc else tune_malloc()
    info = machine_info(os.path.abspath(args.tmp), tuned)
    print(f"# machine: nproc={info['nproc']}, CPU: {info['cpu_model']}, Python {info['python']}, "
          f"malloc: {info['malloc']}", flush=True)

    started = time.perf_counter()
    bench = Bench(profile, os.path.abspath(args.tmp))
    print("building payloads...", file=sys.stderr, flush=True)
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
        chunk = b"".join(pool_kib[0])[:MiB]
        run_io(bench, chunk)

    text, results = report(bench, info, time.perf_counter() - started)
    print()
    print(text)
    if args.json:
        doc = {"machine": info, "profile": asdict(profile), "batch_records": BATCH,
               "segment_bytes": SEGMENT_BYTES, "fetch_max_bytes": FETCH_BYTES, "fsync": "never", **results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
