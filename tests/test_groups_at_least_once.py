"""The README's group loop keeps its at-least-once promise when the worker is killed mid-record.

`for rec in c: handle(rec); c.commit()` must commit only what the loop was given, never records the
last fetch brought in and the loop has not reached (issue 12, defect 10).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time

from tidelog.client import Admin, Producer

from .server_process import ServerProcess, config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = 1000
PARTITIONS = 4
KILLED_AT = 10  # the first worker is killed while it handles its 10th record
SESSION_MS = 2000


def start_worker(target: str, log_path: str, block_at: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.helpers.readme_worker",
            target,
            "billing",
            "orders",
            str(SESSION_MS),
            log_path,
            str(block_at),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path + ".stderr", "ab"),
    )


def lines(log_path: str, kind: str) -> list[tuple[int, int, str]]:
    if not os.path.exists(log_path):
        return []
    with open(log_path) as f:
        return [(int(p), int(o), v) for k, p, o, v in (line.split() for line in f if line.strip()) if k == kind]


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_readme_loop_redelivers_everything_not_handled_when_its_worker_is_killed_mid_record(tmp_path):
    server = ServerProcess(str(tmp_path / "data"), "--config", config_file(tmp_path)).start()  # groups: 200 ms
    first_log, second_log = str(tmp_path / "first.log"), str(tmp_path / "second.log")
    workers = []
    try:
        with Admin(server.target) as admin:
            admin.create_topic("orders", PARTITIONS)
        with Producer(server.target, linger_ms=5) as producer:
            for i in range(RECORDS):
                producer.send("orders", b"%d" % i, key=b"k%d" % i)
        workers.append(start_worker(server.target, first_log, KILLED_AT))
        wait_until(lambda: len(lines(first_log, "HANDLING")) == KILLED_AT, 60, "the first worker's 10th record")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        handled_first = lines(first_log, "HANDLED")
        assert len(handled_first) == KILLED_AT - 1
        with Admin(server.target) as admin:
            committed = admin.committed_offsets("billing")
        # Committed: exactly what was handled (each handle is followed by a commit), nothing fetched beyond it.
        last_handled = collections.defaultdict(lambda: -1)
        for p, o, _ in handled_first:
            last_handled[p] = max(last_handled[p], o)
        assert sum(committed.values()) == KILLED_AT - 1, f"committed {sum(committed.values())} of {RECORDS}"
        for (_, p), offset in committed.items():
            assert offset == last_handled[p] + 1

        workers.append(start_worker(server.target, second_log, 0))
        not_handled = {str(i) for i in range(RECORDS)} - {v for _, _, v in handled_first}
        wait_until(
            lambda: not_handled <= {v for _, _, v in lines(second_log, "HANDLED")},
            90,
            "every record the first worker had not handled to be delivered again",
        )
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGKILL)
                w.wait()
        server.stop()
    killed_mid_record = lines(first_log, "HANDLING")[-1]
    second = lines(second_log, "HANDLED")
    assert killed_mid_record in second  # the record being handled at the kill came again
    assert {v for _, _, v in handled_first + second} == {str(i) for i in range(RECORDS)}  # nothing skipped
    for p in range(PARTITIONS):  # the restarted worker starts each partition right after the last commit
        offsets = [o for q, o, _ in second if q == p]
        assert offsets == sorted(offsets) and offsets[0] == last_handled[p] + 1
