"""Record the request frames real Kafka clients send, for the codec's golden-vector test.

    python -m tests.helpers.kafka_capture tests/data/kafka_requests.json

Starts a broker with its Kafka listener, puts a recording TCP proxy in front of it, runs a scripted
workload through confluent-kafka (librdkafka), kafka-python and aiokafka (produce in each codec,
idempotent produce, a group that consumes and commits, admin calls), and writes the first frame of each
(client, API, version, and codec for Produce) seen: {"client", "api_key", "api_version", "frame": hex}. Run it again only when
a client's version or the served versions change; the test reads the file and needs none of this.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import tempfile
import threading
import time

from tests.server_process import ServerProcess
from tidelog.kafka_protocol import codec, framing, produce


class Recorder:
    """A proxy on a port of its own: client bytes are split into frames and recorded, then forwarded."""

    def __init__(self) -> None:
        self.upstream_port = 0  # the broker's, set once it runs (it advertises this proxy's port)
        self.client = ""
        self.frames: dict[tuple[str, int, int, int], bytes] = {}
        self.port = 0
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._proxy, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await server.serve_forever()

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        client = self.client

        async def requests() -> None:
            while True:
                head = await reader.readexactly(4)
                body = await reader.readexactly(struct.unpack(">i", head)[0])
                api_key, version = struct.unpack_from(">hh", body)
                self.frames.setdefault((client, api_key, version, codec_of(body)), head + body)
                up_writer.write(head + body)
                await up_writer.drain()

        async def responses() -> None:
            while data := await up_reader.read(1 << 16):
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(requests(), responses())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            up_writer.close()


def codec_of(body: bytes) -> int:
    """The codec of a Produce request's first batch (-1 for other requests): one frame kept per codec."""
    api_key, version = struct.unpack_from(">hh", body)
    if api_key != 0:
        return -1
    view = memoryview(body)
    header = framing.parse_header(view, codec.flexible(codec.SERVED[0], version))
    records = produce.parse(view[header.body_at :], version).partitions[0].records
    return records[22] & 0x07 if records is not None and len(records) > 22 else -1


def workload(recorder: Recorder) -> None:
    import aiokafka
    import confluent_kafka
    import confluent_kafka.admin
    import kafka
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    target = f"127.0.0.1:{recorder.port}"
    recorder.client = "librdkafka"
    for compression in ("none", "gzip", "snappy", "lz4", "zstd"):
        p = confluent_kafka.Producer(
            {"bootstrap.servers": target, "compression.type": compression, "enable.idempotence": True, "log_level": 0}
        )
        p.produce("golden", b"v" * 100, key=b"k")
        p.flush(10)
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": target, "log_level": 0})
    admin.create_topics([confluent_kafka.admin.NewTopic("golden-admin", 2)])["golden-admin"].result(10)
    admin.delete_topics(["golden-admin"])["golden-admin"].result(10)
    c = confluent_kafka.Consumer(
        {"bootstrap.servers": target, "group.id": "golden-rd", "auto.offset.reset": "earliest", "log_level": 0}
    )
    c.subscribe(["golden"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and c.poll(0.5) is None:
        pass
    c.commit(asynchronous=False)
    c.close()
    admin.describe_consumer_groups(["golden-rd"])["golden-rd"].result(10)
    admin.list_consumer_groups().result(10)

    recorder.client = "kafka-python"
    for compression in (None, "gzip", "snappy", "lz4", "zstd"):
        kp = kafka.KafkaProducer(bootstrap_servers=target, compression_type=compression)
        kp.send("golden", b"v" * 100).get(10)
        kp.close()
    ka = kafka.KafkaAdminClient(bootstrap_servers=target)
    ka.create_topics([NewTopic("golden-kp", 1, 1)])
    ka.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "golden-kp")])
    ka.list_groups()
    ka.delete_topics(["golden-kp"])
    ka.close()
    kc = kafka.KafkaConsumer(
        "golden", bootstrap_servers=target, group_id="golden-kp", auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    list(kc)
    kc.commit()
    kc.close()
    ka = kafka.KafkaAdminClient(bootstrap_servers=target)
    ka.describe_groups(["golden-kp"])
    ka.list_group_offsets("golden-kp")
    ka.delete_groups(["golden-kp"])
    ka.delete_records({kafka.TopicPartition("golden", 0): 1})
    ka.close()

    recorder.client = "aiokafka"

    async def aio() -> None:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=target)
        await producer.start()
        await producer.send_and_wait("golden", b"v" * 100)
        await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer(
            "golden", bootstrap_servers=target, group_id="golden-aio", auto_offset_reset="earliest"
        )
        await consumer.start()
        await consumer.getmany(timeout_ms=3000)
        await consumer.commit()
        await consumer.stop()

    asyncio.run(aio())


def main(path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder()
        threading.Thread(target=recorder.run, daemon=True).start()
        recorder.ready.wait(10)
        config = f"{tmp}/tidelog.toml"
        with open(config, "w") as f:  # clients are sent to the proxy by the broker's metadata
            f.write(f"group_initial_rebalance_delay_ms = 100\nkafka_advertised_port = {recorder.port}\n")
        server = ServerProcess(f"{tmp}/data", "--config", config, kafka=True).start()
        try:
            assert server.kafka_port is not None
            recorder.upstream_port = server.kafka_port
            workload(recorder)
        finally:
            server.stop()
    frames = [
        {"client": client, "api_key": key, "api_version": version, "frame": frame.hex()}
        for (client, key, version, _), frame in sorted(recorder.frames.items())
    ]
    with open(path, "w") as f:
        json.dump(frames, f, indent=1)
        f.write("\n")
    print(f"{len(frames)} frames written to {path}")


if __name__ == "__main__":
    main(sys.argv[1])
