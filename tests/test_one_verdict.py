"""`tidelog check` and opening the log give one verdict on damage (they share storage.recovery's
`classify` and `missing_segments`): seeded damage of every kind, in every segment, after a clean stop
and after a crash, and each time the two must agree.

Opening reads less than check does (after a clean stop it trusts sealed segments up to their last index
entry, and mid-segment bit rot is found when read or by check), so the agreement is: whatever opening
refuses, check reports as a problem; a directory check finds no problem in opens; and a torn tail
that opening cuts is one check names, at the same byte.
"""

from __future__ import annotations

import os
import random

import pytest

from tidelog import Engine, examine
from tidelog.errors import CorruptLogError

SEED = int(os.environ.get("TIDELOG_VERDICT_SEED", "20261207"))
CASES = 48


def build(data_dir: str, clean: bool, rng: random.Random) -> None:
    with Engine.open(data_dir, {"fsync": "always"}) as engine:
        engine.create_topic("t", 1, segment_bytes=4096)
        for i in range(40):
            engine.produce("t", [rng.randbytes(rng.randint(20, 400)) for _ in range(rng.randint(1, 3))], partition=0)
    if not clean:  # as if the process died after its last fsync: the next open recovers
        os.remove(os.path.join(data_dir, ".clean_shutdown"))


def damage(directory: str, rng: random.Random) -> str:
    logs = sorted(f for f in os.listdir(directory) if f.endswith(".log"))
    kind = rng.choice(["flip", "zero block", "truncate", "garbage past the end", "zeros then garbage past the end"])
    name = logs[-1] if "past the end" in kind else rng.choice(logs)
    path = os.path.join(directory, name)
    data = bytearray(open(path, "rb").read())
    if kind == "flip" and data:
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
    elif kind == "zero block" and data:
        pos = rng.randrange(len(data))
        data[pos : pos + 512] = bytes(len(data[pos : pos + 512]))
    elif kind == "truncate":
        del data[rng.randrange(len(data) + 1) :]
    elif kind == "garbage past the end":
        data += rng.randbytes(rng.randint(1, 200))
    else:
        data += bytes(rng.randint(64, 4096)) + rng.randbytes(rng.randint(1, 200))
    with open(path, "wb") as f:
        f.write(data)
    return f"{kind} in {name}"


@pytest.mark.parametrize("clean", [True, False], ids=["after a clean stop", "after a crash"])
def test_check_and_opening_give_one_verdict_on_damage(tmp_path, clean):
    print(f"seed {SEED} (TIDELOG_VERDICT_SEED)")
    rng = random.Random(f"{SEED}-{clean}")
    disagreements, torn = [], 0
    for case in range(CASES):
        data_dir = str(tmp_path / f"case{case}")
        build(data_dir, clean, rng)
        what = damage(os.path.join(data_dir, "t-0"), rng)
        (found,) = examine.check(data_dir)
        torn_notes = [n for n in found.notes if "torn write" in n]
        try:
            engine = Engine.open(data_dir)
        except CorruptLogError as exc:
            if not found.problems:
                disagreements.append(
                    f"case {case} ({what}): opening refused ({exc.message[:120]}) and check found nothing"
                )
            continue
        with engine:
            cut = engine._topic("t").partition(0).recovery.truncated_at
            if cut >= 0:
                torn += 1
                if not any(f"at byte {cut}," in n for n in torn_notes):
                    disagreements.append(
                        f"case {case} ({what}): opening cut a torn tail at byte {cut}; check "
                        f"said {found.problems or torn_notes or 'nothing'}"
                    )
            elif torn_notes:
                disagreements.append(
                    f"case {case} ({what}): check expected a torn tail to be cut ({torn_notes}); opening cut nothing"
                )
            if not found.problems:
                end = engine.list_offsets("t", 0).high_watermark
                offset = engine.list_offsets("t", 0).log_start
                while offset < end:  # a clean verdict: every record reads
                    offset = engine.fetch("t", 0, offset, 1 << 20).next_offset
    assert not disagreements, "\n".join(disagreements)
    if not clean:
        assert torn > 0, "no case made a torn tail: the test did not exercise the rule"
