"""Child process for the crash tests: produce forever with fsync="always", print every acknowledgement.

Every record's value is a pure function of (partition, offset), so after a crash the parent can check
each stored byte without knowing what was in flight. One thread per partition; killed with SIGKILL.

usage: python -m tests.helpers.crash_producer DATA_DIR PARTITIONS
"""

from __future__ import annotations

import sys
import threading

import tidelog


def value_for(partition: int, offset: int) -> bytes:
    return b"p%d-o%d-" % (partition, offset) + bytes([65 + offset % 26]) * ((offset * 7) % 300)


def batch_size_for(offset: int) -> int:
    return 1 + offset % 13


def main() -> None:
    data_dir, partitions = sys.argv[1], int(sys.argv[2])
    engine = tidelog.Engine.open(data_dir, fsync="always")
    if "t" not in engine.list_topics():
        engine.create_topic("t", partitions=partitions, segment_bytes=64 * 1024, index_interval_bytes=512)
    out = threading.Lock()

    def produce(p: int) -> None:
        end = engine.list_offsets("t", p).log_end
        while True:
            values = [value_for(p, end + j) for j in range(batch_size_for(end))]
            res = engine.produce("t", values, partition=p)[0]
            assert res.base_offset == end, (res, end)
            with out:
                sys.stdout.write(f"ACK {p} {res.base_offset} {res.last_offset}\n")
                sys.stdout.flush()
            end = res.last_offset + 1

    threads = [threading.Thread(target=produce, args=(p,), daemon=True) for p in range(partitions)]
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
