"""Python client of a tidelog server: Producer, Consumer (sync and asyncio) and Admin."""

from .admin import Admin
from .consumer import AsyncConsumer, Consumer
from .producer import Producer, RecordMetadata

__all__ = ["Admin", "AsyncConsumer", "Consumer", "Producer", "RecordMetadata"]
