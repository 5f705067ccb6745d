"""Python client of a tidelog server: Producer, Consumer (sync and asyncio), GroupConsumer,
QueueConsumer and Admin; ClientSecurity for a broker behind TLS and tokens."""

from .admin import Admin
from .async_queue_consumer import AsyncMessage, AsyncQueueConsumer
from .consumer import AsyncConsumer, PartitionConsumer
from .consumers import Consumer
from .group_consumer import GroupConsumer
from .producer import Producer, RecordMetadata
from .queue_consumer import Message, QueueConsumer
from .security import ClientSecurity

__all__ = [
    "Admin",
    "AsyncMessage",
    "AsyncQueueConsumer",
    "AsyncConsumer",
    "ClientSecurity",
    "Consumer",
    "GroupConsumer",
    "Message",
    "PartitionConsumer",
    "Producer",
    "QueueConsumer",
    "RecordMetadata",
]
