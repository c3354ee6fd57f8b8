"""The Kafka producer of book records: configuration mapping, delivery accounting, back-pressure.

Nothing accepted is dropped: when librdkafka's local queue is full the record waits in an
in-order overflow list and :meth:`RecordProducer.offer` returns ``False``, telling the caller to
stop reading the exchange until :meth:`RecordProducer.drain` empties it. The only losses are
deliveries that librdkafka itself reports as failed; those are counted by error and surfaced.

librdkafka reports failed deliveries only (``delivery.report.only.error``): a Python call per
delivered record would cost more than capture's own work on it. What was delivered follows from
librdkafka's queue length, which counts every record handed over and not yet acknowledged or
failed: delivered = handed over - failed - still queued (:class:`Accounting`). Delivery latency
comes from librdkafka's statistics (:class:`ProducerStats`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import SecretStr

from optionstream_pipeline.config import KafkaSettings, is_secret_property
from optionstream_pipeline.kafka.logs import librdkafka_logger

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Accounting:
    """What became of the records handed to librdkafka, at one moment: ``handed_over = delivered +
    failed + in_flight``, exactly. Taken on the producing thread after each :meth:`RecordProducer.drain`
    (nothing is handed over or reported failed meanwhile; acknowledgements only move records from in
    flight to delivered), so it is consistent, and ``delivered`` never goes back, from any thread."""

    handed_over: int = 0  # records given to librdkafka (those it refused outright included)
    delivered: int = 0  # acknowledged by Kafka
    failed: int = 0  # refused outright or reported failed: lost
    in_flight: int = 0  # in librdkafka's queue: not yet acknowledged or failed


@dataclass
class ProducerStats:
    """A summary of the latest librdkafka statistics (``stats_cb``, every few seconds)."""

    tx_bytes: int = 0  # record bytes handed to brokers, before compression
    wire_bytes: int = 0  # bytes sent on the wire: compressed batches plus protocol overhead

    @property
    def compression_ratio(self) -> float:
        return self.tx_bytes / self.wire_bytes if self.wire_bytes else 0.0

    batch_size_avg: float = 0.0
    batch_count_avg: float = 0.0
    brokers_up: int = 0
    delivery_p50_ms: float | None = None  # produce() to acknowledgement, over the last interval
    delivery_p99_ms: float | None = None


def delivery_latency_ms(brokers: dict[str, Any], quantile: str) -> float | None:
    """Produce-to-acknowledgement latency at ``quantile`` ("p50", "p99") from librdkafka's per-broker
    windows: time queued in the producer (``int_latency``), in the request queue (``outbuf_latency``)
    and the request's round trip (``rtt``), summed; the slowest broker's. ``None`` without traffic."""
    found = [
        sum(broker.get(window, {}).get(quantile, 0) for window in ("int_latency", "outbuf_latency", "rtt")) / 1000
        for broker in brokers.values()
        if broker.get("int_latency", {}).get("cnt") and broker.get("rtt", {}).get("cnt")
    ]
    return max(found) if found else None


class RecordProducer:
    """Produces keyed, timestamped records to one topic, in order, without dropping any."""

    def __init__(self, kafka: KafkaSettings, secrets: dict[str, SecretStr] | None = None) -> None:
        self.topic = kafka.topic
        self.flush_timeout_s = kafka.flush_timeout_s
        self.stats = ProducerStats()
        self.accounting = Accounting()
        self.last_error: str | None = None
        self._handed_over = 0
        self._failed = 0
        self._overflow: deque[tuple[str, bytes, int, str]] = deque()
        self._stats_lock = threading.Lock()
        self.fatal_error: str | None = None
        self.client_config = producer_config(kafka, secrets)  # also for the admin client
        config = dict(self.client_config)
        config["delivery.report.only.error"] = True
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
        self._handed_over += 1
        return True

    def drain(self, timeout_s: float = 0.0) -> bool:
        """Serve failure reports and statistics, move overflow into librdkafka, take the accounting;
        ``True`` once nothing waits."""
        self._producer.poll(timeout_s)
        overflow = self._overflow
        while overflow:
            key, value, timestamp_ms, topic = overflow[0]
            try:
                self._produce(topic, value, key, timestamp=timestamp_ms)
            except BufferError:
                break
            except KafkaException as exc:
                self._refused(key, exc)
            overflow.popleft()
            self._handed_over += 1
        self._account(len(self._producer))
        return not overflow

    def _account(self, queued: int) -> None:
        """``queued``: librdkafka's queue length, which also counts its own events (statistics, logs)
        not yet served: delivered is then undercounted for a moment, never overcounted, and is kept
        from going back."""
        handed_over, failed = self._handed_over, self._failed
        delivered = max(self.accounting.delivered, handed_over - failed - queued)
        self.accounting = Accounting(handed_over, delivered, failed, handed_over - failed - delivered)

    @property
    def waiting(self) -> int:
        """Records accepted but not yet handed to librdkafka."""
        return len(self._overflow)

    # -- shutdown -----------------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> int:
        """Deliver everything within the bound; returns how many records were still undelivered."""
        timeout_s = self.flush_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while self._overflow and time.monotonic() < deadline:
            self.drain(0.05)
        remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        self._account(remaining)
        return remaining + len(self._overflow)

    def close(self, timeout_s: float | None = None) -> int:
        """Flush within the bound, then release librdkafka (its threads and connections); the
        accounting stays, records still unacknowledged at the bound in flight for good."""
        undelivered = self.flush(timeout_s)
        self._producer = None
        self._produce = None
        return undelivered

    def _refused(self, key: str, exc: KafkaException) -> None:
        self._failed += 1
        self.last_error = str(exc.args[0].str() if exc.args else exc)
        log.error("Kafka refused the record for %s: %s", key, self.last_error)

    # -- callbacks (run inside poll/flush, on the caller's thread) ----------------------------

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        """Failed deliveries only (``delivery.report.only.error``)."""
        if error is None:
            return
        self._failed += 1
        self.last_error = f"{error.name()}: {error.str()}"
        key = message.key().decode() if message.key() else ""
        if self._failed <= 10 or self._failed % 1000 == 0:
            log.error("Kafka delivery failed for %s (%d failed so far): %s", key, self._failed, error.str())

    def _on_stats(self, stats_json: str) -> None:
        stats = msgspec.json.decode(stats_json)
        topic = stats.get("topics", {}).get(self.topic, {})
        summary = ProducerStats(
            tx_bytes=stats.get("txmsg_bytes", 0),
            wire_bytes=sum(broker.get("txbytes", 0) for broker in stats.get("brokers", {}).values()),
            batch_size_avg=float(topic.get("batchsize", {}).get("avg", 0)),
            batch_count_avg=float(topic.get("batchcnt", {}).get("avg", 0)),
            brokers_up=sum(1 for broker in stats.get("brokers", {}).values() if broker.get("state") == "UP"),
            delivery_p50_ms=delivery_latency_ms(stats.get("brokers", {}), "p50"),
            delivery_p99_ms=delivery_latency_ms(stats.get("brokers", {}), "p99"),
        )
        with self._stats_lock:
            self.stats = summary

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():  # e.g. the idempotent producer lost its state: this producer cannot go on
            self.fatal_error = f"{error.name()}: {error.str()}"
            log.critical("Kafka producer fatal error: %s", self.fatal_error)
        else:  # said once per problem, with the librdkafka log lines it echoes
            librdkafka_logger().warning("%s", error.str())
