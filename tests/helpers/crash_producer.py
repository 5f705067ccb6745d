"""Child process for the crash tests: produce forever, consume in a group, print every acknowledgement.

Every record's value is a pure function of (partition, offset), so after a crash the parent can check
each stored byte without knowing what was in flight. One producer thread per partition, and one
embedded group member that checks what it reads and commits after each poll; killed with SIGKILL.
Under fsync="interval" a flush runs every 16 acknowledgements of a partition, and is printed.

Lines: "ACK p base last", "FLUSHED p end", "COMMIT p offset", "BAD ..." (a wrong record was read).

usage: python -m tests.helpers.crash_producer DATA_DIR PARTITIONS [FSYNC]
"""

from __future__ import annotations

import sys
import threading

import tidelog
from tidelog.client.embedded_group import EmbeddedGroupConsumer
from tidelog.groups.coordinator import GroupCoordinator


def value_for(partition: int, offset: int) -> bytes:
    return b"p%d-o%d-" % (partition, offset) + bytes([65 + offset % 26]) * ((offset * 7) % 300)


def batch_size_for(offset: int) -> int:
    return 1 + offset % 13


def main() -> None:
    data_dir, partitions = sys.argv[1], int(sys.argv[2])
    fsync = sys.argv[3] if len(sys.argv) > 3 else "always"
    engine = tidelog.Engine.open(data_dir, fsync=fsync, fsync_interval_ms=60_000)
    if "t" not in engine.list_topics():
        engine.create_topic("t", partitions=partitions, segment_bytes=64 * 1024, index_interval_bytes=512)
    out = threading.Lock()

    def say(line: str) -> None:
        with out:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def produce(p: int) -> None:
        end = engine.list_offsets("t", p).log_end
        acks = 0
        while True:
            values = [value_for(p, end + j) for j in range(batch_size_for(end))]
            res = engine.produce("t", values, partition=p)[0]
            assert res.base_offset == end, (res, end)
            say(f"ACK {p} {res.base_offset} {res.last_offset}")
            end = res.last_offset + 1
            acks += 1
            if fsync == "interval" and acks % 16 == 0:
                engine.flush()
                say(f"FLUSHED {p} {end}")

    def consume() -> None:
        with EmbeddedGroupConsumer(GroupCoordinator(engine), "g", ["t"], auto_commit=False) as consumer:
            while True:
                records = consumer.poll(0.2)
                positions = {}
                for r in records:
                    if r.value != value_for(r.partition, r.offset):
                        say(f"BAD {r.partition} {r.offset}")
                    positions[(r.topic, r.partition)] = r.offset + 1
                if positions:
                    consumer.commit(positions)
                    for (_, p), o in sorted(positions.items()):
                        say(f"COMMIT {p} {o}")

    threads = [threading.Thread(target=produce, args=(p,), daemon=True) for p in range(partitions)]
    threads.append(threading.Thread(target=consume, daemon=True))
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
