"""Kafka's murmur2 partitioner (native/partition_hash.pyx)."""

from collections.abc import Sequence

import numpy as np
from typing_extensions import Buffer

def murmur2(key: Buffer) -> int: ...
def partitions_for_keys(keys: Sequence[Buffer | None], partitions: int) -> np.ndarray:
    """Partition of every key (-1 for a None key)."""
