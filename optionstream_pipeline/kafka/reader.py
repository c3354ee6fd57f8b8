"""The one reader of the topics: assigned partitions, from given offsets, decoded, to their end.

Used by the archive (a partition from where the archive ended to its end), by live consumers (from
the latest, the earliest or a given offset, following), and by the tests.

**The end of a partition** is librdkafka's partition EOF: it is raised when the consumer's position
reaches the end offset the broker reported in that very fetch. It is never a high watermark asked
for before reading: on Apache Kafka that number moves while you read (records produced meanwhile
would be cut off or waited for forever), and on the embedded Tansu broker an uncached watermark is
simply too low. See ``../shared/notes/kafka-broker.md``.

Every wait is bounded (``timeout_s``); :meth:`TopicReader.read_to_end` raises :class:`TimeoutError`
naming the partitions that did not get there. A value that is not a book record this version can
read raises :class:`RecordError` naming its partition and offset, after every record before it was
handed out, and reading goes on after it: nothing is skipped silently and nothing is lost.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from optionstream_pipeline.kafka.admin import connection_properties
from optionstream_pipeline.kafka.logs import librdkafka_logger
from optionstream_pipeline.records.book import BookRecord, RecordError, decode_record
from optionstream_pipeline.records.ticker import TickerData, TickerRecord, decode_ticker

log = logging.getLogger(__name__)

BEGINNING = OFFSET_BEGINNING
LATEST = OFFSET_END
BATCH = 1000
POLL_S = 0.1  # one wait inside the reader: short, so that deadlines and cancels are noticed quickly
FETCH_QUEUE_BACKOFF_MS = 20
"""How long librdkafka postpones a partition's next fetch once its prefetch queue is over its limits.
Its default, a second, starves a reader that does real work per record: the book consumer spent
39 % of its time waiting in ``poll`` for fetches (py-spy) and read 0.22 of a bare consume's records
a second; with this, 0.48 at the median (``docs/benchmarks.md``, the book consumer). The cost is a fetch decision
every 20 ms for a partition whose queue is full."""
LOOKUP_S = 1.0  # for an earliest offset (else the reader starts from the logical one, half a second later)


class TopicRecord(msgspec.Struct, frozen=True, gc=False):
    """One Kafka message of the topic: where it is, its key and timestamp, its bytes and the decoded record.

    A struct the garbage collector does not track (it holds no cycles): a reader makes one per
    record, and a tracked object each would cost more in collections than its own making.
    """

    partition: int
    offset: int
    timestamp_ms: int  # the Kafka timestamp: the exchange time for snapshot/change/gap
    key: str
    value: bytes
    record: BookRecord | TickerRecord[TickerData]


DECODERS: dict[str, Callable[[bytes], object]] = {"book": decode_record, "ticker": decode_ticker}
"""How each topic's values decode: ``TopicReader(..., records="ticker")`` reads the ticker topic."""


class TopicReader:
    """Reads assigned partitions of one topic.

    ``connection`` is ``bootstrap.servers`` or a mapping of client properties (security ones
    included; anything else in it is left out). ``start`` is one offset for every partition
    (``BEGINNING``, ``LATEST`` or a number) or ``{partition: offset}`` to read only those.
    ``group_id`` names the consumer group whose offsets :meth:`commit` writes (for monitoring such
    as Kafka UI's lag); progress itself is never read from the group.
    """

    def __init__(
        self,
        connection: str | Mapping[str, Any],
        topic: str,
        start: int | Mapping[int, int] = BEGINNING,
        *,
        group_id: str | None = None,
        metadata_timeout_s: float = 10.0,
        fetch_wait_ms: int = 20,
        records: str = "book",
    ) -> None:
        self._decode = DECODERS[records]
        properties = {"bootstrap.servers": connection} if isinstance(connection, str) else connection
        self.topic = topic
        self._consumer = Consumer(
            {
                **connection_properties(properties),
                "group.id": group_id or f"optionstream-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                # A start offset that is gone (retention) or beyond the end (a recreated topic) reads
                # from the earliest record there is: the caller sees which offset came first.
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": fetch_wait_ms,
                "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
                "logger": librdkafka_logger(),
            }
        )
        if isinstance(start, Mapping):
            starts = dict(start)
        else:
            starts = dict.fromkeys(self._partitions(metadata_timeout_s), start)
        self._look_up_beginnings = True
        starts = {partition: self._explicit(partition, offset) for partition, offset in starts.items()}
        self.partitions = sorted(starts)
        self._next: dict[int, int | None] = {p: (o if o >= 0 else None) for p, o in starts.items()}
        self._at_end: set[int] = set()  # partitions whose end was reached and nothing read since
        self._pending: deque[Message] = deque()
        self._bad: RecordError | None = None  # a value that did not decode, raised by the next poll
        self._consumer.assign([TopicPartition(topic, p, o) for p, o in sorted(starts.items())])

    def _partitions(self, timeout_s: float) -> list[int]:
        metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        described = metadata.topics.get(self.topic)
        if described is None or described.error is not None or not described.partitions:
            why = described.error.str() if described is not None and described.error else "no partitions"
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {self.topic}: {why}"))
        return sorted(described.partitions)

    # -- reading ----------------------------------------------------------------------------------

    def poll(self, timeout_s: float = POLL_S) -> list[TopicRecord]:
        """The next records (waiting at most ``timeout_s`` for some), in partition order.

        A value that does not decode ends the list before it; it is raised on the next call.
        """
        if self._bad is not None:
            bad, self._bad = self._bad, None
            raise bad
        records: list[TopicRecord] = []
        try:
            records.extend(self.stream(timeout_s))
        except RecordError as exc:
            if not records:
                raise
            self._bad = exc
        return records

    def stream(self, timeout_s: float = POLL_S) -> Iterator[TopicRecord]:
        """The fetched records (waiting at most ``timeout_s`` for some when none are), each decoded
        only when it is taken, up to the end of what was fetched.

        For a reader that handles one record at a time (a live consumer): a record dies as soon as
        it was handled instead of living on in a batch, which in Python costs more than its decoding
        (the allocator's and the garbage collector's work on a thousand records' level lists). A
        value that does not decode raises :class:`RecordError` when it is taken; what follows it
        comes from the next call.
        """
        pending = self._pending
        if not pending:
            self.fill(timeout_s)
        at_next, at_end, decode = self._next, self._at_end, self._decode
        while pending:
            message = pending.popleft()
            error = message.error()
            if error is not None:
                self._on_error(message, error)
                continue
            partition, offset, value = message.partition(), message.offset(), message.value()
            at_next[partition] = offset + 1
            if at_end:
                at_end.discard(partition)
            try:
                record = decode(value)
            except RecordError as exc:
                raise RecordError(f"{self.topic} partition {partition} offset {offset}: {exc}") from None
            key = message.key()
            yield TopicRecord(partition, offset, message.timestamp()[1], key.decode() if key else "", value, record)

    def fill(self, timeout_s: float = POLL_S) -> int:
        """Fetch, waiting at most ``timeout_s`` when nothing is fetched yet, without decoding; returns
        how many messages are waiting to be taken. (``poll`` on the client returns as soon as a record
        or an end of partition is there, where ``consume`` would wait out its timeout for a full
        batch; then whatever else is already fetched, without waiting.)"""
        if not self._pending:
            first = self._consumer.poll(timeout_s)
            if first is not None:
                self._pending.append(first)
                self._pending.extend(self._consumer.consume(BATCH - 1, timeout=0))
        return len(self._pending)

    def read_to_end(self, timeout_s: float) -> Iterator[TopicRecord]:
        """Every record of :meth:`batches_to_end`, one at a time."""
        for batch in self.batches_to_end(timeout_s):
            yield from batch

    def batches_to_end(self, timeout_s: float) -> Iterator[list[TopicRecord]]:
        """Every record from the current positions until each assigned partition reported its end,
        in the batches they were fetched in.

        A partition counts as read to its end when an end-of-partition event at the consumer's
        position arrives during this call: one seen before is looked at again (the end may have
        moved since). Records produced meanwhile may come too; what was handed out is exactly what
        :meth:`positions` says.
        """
        deadline = time.monotonic() + timeout_s
        self._look_again(self._at_end)
        reached: set[int] = set()  # each partition counts once it was at its end during this call
        while not reached >= set(self.partitions):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(self.partitions) - reached)
                raise TimeoutError(
                    f"{self.topic}: partitions {missing} not read to their end within {timeout_s:g} s "
                    f"(next offsets {[self._next.get(p) for p in missing]})"
                )
            batch = self.poll(min(POLL_S, remaining))
            if batch:
                yield batch
            reached |= self._at_end

    def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` (or ``BEGINNING``) next; what was buffered for it is dropped."""
        offset = self._explicit(partition, offset)
        self._pending = deque(m for m in self._pending if m.partition() != partition)
        self._consumer.seek(TopicPartition(self.topic, partition, offset))
        self._next[partition] = offset if offset >= 0 else None
        self._at_end.discard(partition)

    def at_end(self, partition: int) -> bool:
        """Whether the partition's end was reached and nothing was read since."""
        return partition in self._at_end

    def end_offset(self, partition: int) -> int:
        """The partition's end as the latest fetch reported it (its high watermark then): valid only
        after records or an end of partition came from a fetch."""
        _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
        return high

    def positions(self) -> dict[int, int | None]:
        """The offset of the next record to hand out, per partition (``None``: not known yet)."""
        return dict(self._next)

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Write ``{partition: next offset}`` to the consumer group, synchronously."""
        self._consumer.commit(
            offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())], asynchronous=False
        )

    # -- internals --------------------------------------------------------------------------------

    def _explicit(self, partition: int, offset: int) -> int:
        """``BEGINNING`` as the offset it is now (the low watermark, which every broker reports right).

        librdkafka looks a logical offset up only once it knows the partition's leader, and retries
        500 ms later when it does not yet, as right after an assign: a read from ``BEGINNING`` would
        start half a second late, once per reader. A low watermark that moves before the fetch (retention)
        is an offset out of range, which ``auto.offset.reset=earliest`` turns into the earliest again.
        """
        if offset != BEGINNING or not self._look_up_beginnings:
            return offset
        try:
            low, _ = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=LOOKUP_S, cached=False
            )
        except KafkaException as exc:  # unreachable now: librdkafka looks it up itself, once it can
            log.debug("%s partition %d: earliest offset not known yet (%s)", self.topic, partition, exc)
            self._look_up_beginnings = False
            return offset
        return low

    def _look_again(self, partitions: set[int]) -> None:
        """An end seen in an earlier fetch may have moved: fetch these partitions again from their
        positions, so that a fresh end-of-partition event (or the new records) follows. Messages of
        theirs already buffered come again from the broker, in order."""
        for partition in sorted(partitions):
            self.seek(partition, self._next[partition])

    def _on_error(self, message: Message, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            self._at_end.add(message.partition())
            self._next[message.partition()] = message.offset()
        elif error.fatal():
            raise KafkaException(error)
        else:
            log.warning("%s: %s", self.topic, error.str())

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
