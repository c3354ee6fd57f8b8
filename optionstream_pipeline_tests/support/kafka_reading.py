"""Read a whole topic back, as a test consumer would, with a deadline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


@dataclass
class ReadRecord:
    key: str
    value: dict[str, Any]
    timestamp_ms: int
    partition: int
    offset: int


class TopicReader:
    """Reads every partition of a topic from the beginning, accumulating records across calls."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[ReadRecord] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
                "session.timeout.ms": 6000,
            }
        )
        metadata = self._consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def read_until(self, done: Callable[[list[ReadRecord]], bool], timeout: float, what: str = "") -> list[ReadRecord]:
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s reading the topic: {what} ({len(self.records)} read)"
                )
            for message in self._consumer.consume(1000, timeout=0.1):
                if message.error():
                    continue
                self.records.append(
                    ReadRecord(
                        message.key().decode(),
                        msgspec.json.decode(message.value()),
                        message.timestamp()[1],
                        message.partition(),
                        message.offset(),
                    )
                )
        return self.records

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
