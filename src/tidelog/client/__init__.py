"""Python client of a tidelog server: Producer, Consumer (sync and asyncio), GroupConsumer,
QueueConsumer and Admin."""

from .admin import Admin
from .async_queue_consumer import AsyncMessage, AsyncQueueConsumer
from .consumer import AsyncConsumer, PartitionConsumer
from .consumers import Consumer
from .group_consumer import GroupConsumer
from .producer import Producer, RecordMetadata
from .queue_consumer import Message, QueueConsumer

__all__ = [
    "Admin",
    "AsyncMessage",
    "AsyncQueueConsumer",
    "AsyncConsumer",
    "Consumer",
    "GroupConsumer",
    "Message",
    "PartitionConsumer",
    "Producer",
    "QueueConsumer",
    "RecordMetadata",
]
