"""Child process of the adversarial loop: an idempotent `Producer` that outlives broker crashes.

usage: python -m tests.helpers.adversary_producer TARGET NAME TOPICS LOG SEED RATE

Sends records "<NAME>:<seq>" (seq counts from 0, one per record; keys spread them over partitions)
to the comma-separated TOPICS in seeded, uneven bursts averaging RATE records a second, with random
linger and batch sizes, until its stdin closes; then flushes, prints DONE and exits. It never resends anything itself: what the
broker stores twice, the broker or the Producer duplicated. Appends one line per outcome to LOG
(flushed at once, so a SIGKILL of this process loses at most lines still being written):

    ACK <topic> <partition> <offset> <seq>
    FAIL <topic> <seq> <error class>
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

from tidelog.client import Producer


def main() -> None:
    target, name, topics, log_path = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4]
    seed, rate = int(sys.argv[5]), float(sys.argv[6])
    rng = random.Random(seed)
    out = open(log_path, "a", buffering=1)
    lock = threading.Lock()

    def outcome(topic: str, seq: int):
        def done(future):
            err = future.exception()
            with lock:
                if err is None:
                    meta = future.result()
                    out.write(f"ACK {topic} {meta.partition} {meta.offset} {seq}\n")
                else:
                    out.write(f"FAIL {topic} {seq} {type(err).__name__}\n")

        return done

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    producer = Producer(
        target, linger_ms=rng.choice([0, 1, 5]), batch_bytes=rng.choice([1024, 2048, 3500]), delivery_timeout_s=600
    )
    seq = 0
    started = time.monotonic()
    while not stop.is_set():
        ahead = seq / rate - (time.monotonic() - started)
        if ahead > 0:
            stop.wait(ahead)
        for _ in range(rng.randrange(1, 50)):
            topic = rng.choice(topics)
            value = f"{name}:{seq}".encode() + b"." * rng.randrange(0, 300)
            producer.send(topic, value, key=b"k%d" % rng.randrange(64)).add_done_callback(outcome(topic, seq))
            seq += 1
    producer.flush()
    producer.close()
    with lock:
        out.write("DONE\n")
        out.flush()
        os.fsync(out.fileno())
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
