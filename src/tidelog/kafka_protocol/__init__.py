"""Kafka's wire protocol on tidelog's engine: a listener that existing Kafka clients and tools talk to.

framing (frames, request and response headers, primitive readers and writers) → codec (every message
from Kafka's own JSON specs, through kafka-python's `kafka.protocol`) → apis (one handler per API,
translation only) with two hot paths walked and written by hand (produce, fetch) and the classic
group protocol (classic_groups); listener runs the connections. Imports point down into the engine
and groups; nothing below knows this package.
"""
