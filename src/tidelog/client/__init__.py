"""Python client of a tidelog server: Producer, Consumer (sync and asyncio) and Admin."""

from .admin import Admin
from .consumer import AsyncConsumer, PartitionConsumer
from .consumers import Consumer
from .group_consumer import GroupConsumer
from .producer import Producer, RecordMetadata

__all__ = ["Admin", "AsyncConsumer", "Consumer", "GroupConsumer", "PartitionConsumer", "Producer", "RecordMetadata"]
