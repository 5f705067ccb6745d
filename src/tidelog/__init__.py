"""tidelog: a native-accelerated, Kafka-like partitioned commit log, embedded or served over gRPC.

import tidelog
with tidelog.Engine.open("./data") as log:
    log.create_topic("orders", partitions=4)
    log.produce("orders", [b"v1", b"v2"], keys=[b"k1", b"k2"])
    for rec in log.fetch("orders", partition=0, offset=0):
        print(rec.offset, rec.key, rec.value)
"""

from . import errors
from ._native import record_batch as _record_batch
from .codec.batch import BatchView, build_batch, iter_batches
from .codec.batch import validate as validate_batches
from .config import EngineConfig, TopicConfig
from .engine.engine import EARLIEST, LATEST, Engine
from .engine.results import FetchResult
from .errors import *  # noqa: F401,F403 - the error tree is part of the public surface
from .values import PartitionDescription, PartitionOffsets, ProduceResult, TopicDescription

Record = _record_batch.Record

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "EngineConfig",
    "TopicConfig",
    "Record",
    "FetchResult",
    "ProduceResult",
    "PartitionOffsets",
    "PartitionDescription",
    "TopicDescription",
    "BatchView",
    "build_batch",
    "iter_batches",
    "validate_batches",
    "EARLIEST",
    "LATEST",
    "errors",
    "__version__",
] + [name for name in errors.__dict__ if name.endswith("Error")]
