"""The Kafka producer of book records: configuration mapping, delivery accounting, back-pressure.

Nothing accepted is dropped: when librdkafka's local queue is full the record waits in an
in-order overflow list and :meth:`RecordProducer.offer` returns ``False``, telling the caller to
stop reading the exchange until :meth:`RecordProducer.drain` empties it. The only losses are
deliveries that librdkafka itself reports as failed; those are counted by error and surfaced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import SecretStr

from optionstream_pipeline.config import KafkaSettings, is_secret_property
from optionstream_pipeline.kafka.logs import librdkafka_logger

log = logging.getLogger(__name__)

LATENCY_SAMPLES = 20_000
STATISTICS_INTERVAL_MS = 5_000


def producer_config(kafka: KafkaSettings, secrets: dict[str, SecretStr] | None = None) -> dict[str, Any]:
    """librdkafka properties from the typed settings, then the passthrough, then the secrets.

    ``partitioner=murmur2_random`` puts a key on the same partition as the Java client would, so
    consumers in any language agree on where an instrument lives.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(kafka.brokers),
        "batch.num.messages": kafka.batch_size,
        "linger.ms": kafka.batch_timeout_ms,
        "compression.type": kafka.compression_type,
        "acks": kafka.required_acks,
        "enable.idempotence": kafka.enable_idempotency,
        "retries": kafka.max_retries,
        "retry.backoff.ms": kafka.retry_backoff_ms,
        "queue.buffering.max.messages": kafka.queue_max_messages,
        "partitioner": "murmur2_random",
        "statistics.interval.ms": STATISTICS_INTERVAL_MS,
    }
    config.update(kafka.librdkafka)
    config.update({prop: secret.get_secret_value() for prop, secret in (secrets or {}).items()})
    return config


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to log: secret-bearing properties replaced."""
    return {key: ("***" if is_secret_property(key) else value) for key, value in config.items()}


@dataclass
class DeliveryStats:
    """Counters the delivery callback keeps; read by monitoring."""

    delivered: int = 0
    failed: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    last_error: str | None = None


@dataclass
class ProducerStats:
    """A summary of the latest librdkafka statistics (``stats_cb``)."""

    tx_bytes: int = 0  # record bytes handed to brokers, before compression
    wire_bytes: int = 0  # bytes sent on the wire: compressed batches plus protocol overhead

    @property
    def compression_ratio(self) -> float:
        return self.tx_bytes / self.wire_bytes if self.wire_bytes else 0.0

    batch_size_avg: float = 0.0
    batch_count_avg: float = 0.0
    brokers_up: int = 0


class RecordProducer:
    """Produces keyed, timestamped records to one topic, in order, without dropping any."""

    def __init__(self, kafka: KafkaSettings, secrets: dict[str, SecretStr] | None = None) -> None:
        self.topic = kafka.topic
        self.flush_timeout_s = kafka.flush_timeout_s
        self.delivery = DeliveryStats()
        self.stats = ProducerStats()
        self.produced = 0
        self._overflow: deque[tuple[str, bytes, int, str]] = deque()
        self._stats_lock = threading.Lock()
        self.fatal_error: str | None = None
        self.client_config = producer_config(kafka, secrets)  # also for the admin client
        config = dict(self.client_config)
        config["on_delivery"] = self._on_delivery
        config["stats_cb"] = self._on_stats
        config["error_cb"] = self._on_error
        config["logger"] = librdkafka_logger()
        self._producer: Producer | None = Producer(config)
        self._produce = self._producer.produce

    # -- hot path -----------------------------------------------------------------------------

    def offer(self, key: str, value: bytes, timestamp_ms: int, topic: str | None = None) -> bool:
        """Queue one record (to ``topic``, by default the book topic). ``False`` means the local queue
        is full: call :meth:`drain` before more. Records of every topic keep one order through the overflow."""
        topic = topic or self.topic
        if self._overflow:
            self._overflow.append((key, value, timestamp_ms, topic))
            return False
        try:
            self._produce(topic, value, key, timestamp=timestamp_ms)
        except BufferError:
            self._overflow.append((key, value, timestamp_ms, topic))
            return False
        except KafkaException as exc:  # refused outright (e.g. too large): a counted loss, not a crash
            self._refused(key, exc)
            return True
        self.produced += 1
        return True

    def drain(self, timeout_s: float = 0.0) -> bool:
        """Serve delivery reports and move overflow into librdkafka; ``True`` once nothing waits."""
        self._producer.poll(timeout_s)
        overflow = self._overflow
        while overflow:
            key, value, timestamp_ms, topic = overflow[0]
            try:
                self._produce(topic, value, key, timestamp=timestamp_ms)
            except BufferError:
                return False
            except KafkaException as exc:
                self._refused(key, exc)
                overflow.popleft()
                continue
            overflow.popleft()
            self.produced += 1
        return True

    @property
    def waiting(self) -> int:
        """Records accepted but not yet handed to librdkafka."""
        return len(self._overflow)

    def in_flight(self) -> int:
        """Records handed to librdkafka and not yet acknowledged or failed."""
        producer = self._producer
        return len(producer) if producer is not None else 0

    # -- shutdown -----------------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> int:
        """Deliver everything within the bound; returns how many records were still undelivered."""
        timeout_s = self.flush_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while self._overflow and time.monotonic() < deadline:
            self.drain(0.05)
        remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        return remaining + len(self._overflow)

    def close(self, timeout_s: float | None = None) -> int:
        """Flush within the bound, then release librdkafka (its threads and connections); counters stay."""
        undelivered = self.flush(timeout_s)
        self._producer = None
        self._produce = None
        return undelivered

    def _refused(self, key: str, exc: KafkaException) -> None:
        self.delivery.failed += 1
        self.delivery.last_error = str(exc.args[0].str() if exc.args else exc)
        log.error("Kafka refused the record for %s: %s", key, self.delivery.last_error)

    # -- callbacks (run inside poll/flush, on the caller's thread) ----------------------------

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        delivery = self.delivery
        if error is None:
            delivery.delivered += 1
            latency = message.latency()
            if latency is not None:
                delivery.latencies_s.append(latency)
            return
        delivery.failed += 1
        delivery.last_error = f"{error.name()}: {error.str()}"
        key = message.key().decode() if message.key() else ""
        if delivery.failed <= 10 or delivery.failed % 1000 == 0:
            log.error("Kafka delivery failed for %s (%d failed so far): %s", key, delivery.failed, error.str())

    def _on_stats(self, stats_json: str) -> None:
        stats = msgspec.json.decode(stats_json)
        topic = stats.get("topics", {}).get(self.topic, {})
        summary = ProducerStats(
            tx_bytes=stats.get("txmsg_bytes", 0),
            wire_bytes=sum(broker.get("txbytes", 0) for broker in stats.get("brokers", {}).values()),
            batch_size_avg=float(topic.get("batchsize", {}).get("avg", 0)),
            batch_count_avg=float(topic.get("batchcnt", {}).get("avg", 0)),
            brokers_up=sum(1 for broker in stats.get("brokers", {}).values() if broker.get("state") == "UP"),
        )
        with self._stats_lock:
            self.stats = summary

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():  # e.g. the idempotent producer lost its state: this producer cannot go on
            self.fatal_error = f"{error.name()}: {error.str()}"
            log.critical("Kafka producer fatal error: %s", self.fatal_error)
        else:  # said once per problem, with the librdkafka log lines it echoes
            librdkafka_logger().warning("%s", error.str())
