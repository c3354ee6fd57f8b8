"""The book consumer: the live topic read, every selected book rebuilt, each update handed out.

The I/O shell around :class:`~optionstream_pipeline.consume.books.BookBuilder` (the rules) and the
shared :class:`~optionstream_pipeline.kafka.reader.TopicReader` (Kafka)::

    with BookConsumer("127.0.0.1:9092", "orderbook.deribit.options", start="latest") as consumer:
        for update in consumer:
            book = update.book
            print(book.instrument, book.best_bid(), book.best_ask(), book.why or "reliable")

``start`` is ``"latest"`` (what is produced from now on: each book waits for its next snapshot),
``"earliest"`` (everything the topic still holds), or a past ``datetime``: the books are then
seeded from the archive's book at that time and Kafka is read from right after the archive's rows
(:mod:`.history`); records up to that time are applied without being handed out, so that the
first update handed out is the first record after it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from optionstream_pipeline.config import Settings
from optionstream_pipeline.consume.books import BookBuilder, OrderBook
from optionstream_pipeline.consume.history import LastArchived, handover_at
from optionstream_pipeline.consume.selection import Selection
from optionstream_pipeline.kafka.admin import topic_partitions
from optionstream_pipeline.kafka.producer import producer_config
from optionstream_pipeline.kafka.reader import BEGINNING, LATEST, TopicReader, TopicRecord
from optionstream_pipeline.records.book import BookRecord, RecordError

log = logging.getLogger(__name__)

Start = Literal["latest", "earliest"] | datetime
COMMIT_INTERVAL_S = 5.0


class BookUpdate(msgspec.Struct, frozen=True, gc=False):
    """One record applied: the book as it is now (read it before the next update, or copy what you
    keep: the object goes on changing), the record, and where it came from. (Untracked by the
    garbage collector, as :class:`TopicRecord`: one is made per record.)"""

    book: OrderBook
    record: BookRecord
    partition: int
    offset: int


class BookConsumer:
    """Reads ``topic`` and rebuilds the books ``select`` accepts (all by default).

    ``connection`` is ``bootstrap.servers`` or a mapping of client properties, as for
    :class:`TopicReader`. ``archive`` (the archive's directory) is needed to start from a past time.
    ``metadata_timeout_s`` bounds the wait for the topic's partitions (an unreachable broker).
    ``group_id`` names the consumer group the positions are committed to every few seconds, only so
    that monitoring (Kafka UI) shows this consumer's lag: where it starts is ``start``, always.
    """

    def __init__(
        self,
        connection: str | Mapping[str, Any],
        topic: str,
        start: Start = "latest",
        *,
        archive: str | Path | None = None,
        select: Callable[[str], bool] | None = None,
        group_id: str | None = None,
        metadata_timeout_s: float = 10.0,
    ) -> None:
        self.topic = topic
        self._metadata_timeout_s = metadata_timeout_s
        self.builder = BookBuilder(select=select)
        self.bad_records = 0
        self._joins: dict[int, LastArchived] = {}
        self._quiet_until_us: int | None = None  # records up to this book_time are history: applied, not handed out
        self._book_time_us: dict[int, int] = {}
        self._group_id = group_id
        self._read_ahead: deque[TopicRecord] = deque()  # read to check the joins, not handed out yet
        self._committed_at = time.monotonic()
        if isinstance(start, datetime):
            starts = self._from_archive(connection, archive, start)
        elif start in ("latest", "earliest"):
            starts = LATEST if start == "latest" else BEGINNING
        else:
            raise ValueError(f"start {start!r}: expected 'latest', 'earliest' or a datetime")
        self._reader = TopicReader(connection, topic, starts, group_id=group_id, metadata_timeout_s=metadata_timeout_s)
        if self._joins:
            self._check_joins(metadata_timeout_s)

    @classmethod
    def from_settings(
        cls, settings: Settings, start: Start = "latest", select: Selection | None = None, group_id: str | None = None
    ) -> BookConsumer:
        """The configured topic, brokers (secrets from the environment) and archive; a selection of
        everything rebuilds every book without asking it."""
        return cls(
            producer_config(settings.kafka, settings.kafka_secrets()),
            settings.kafka.topic,
            start,
            archive=settings.archive.path,
            select=None if select is None or select.everything else select,
            group_id=group_id,
            metadata_timeout_s=settings.kafka.admin_timeout_s,
        )

    def _from_archive(
        self, connection: str | Mapping[str, Any], archive: str | Path | None, moment: datetime
    ) -> dict[int, int]:
        if archive is None:
            raise ValueError("starting from a past time needs the archive: pass archive=<its directory>")
        if moment.tzinfo is None:
            raise ValueError(f"{moment}: give the time with its time zone (UTC), not a naive datetime")
        handover = handover_at(archive, self.topic, moment)
        for book in handover.books:
            if self.builder.selects(book.instrument):
                self.builder.seed(book)
        for partition, last in handover.partitions.items():
            self.builder.seed_session(partition, last.capture_id)
        self._joins = dict(handover.partitions)
        self._quiet_until_us = int(moment.timestamp() * 1_000_000)
        properties = {"bootstrap.servers": connection} if isinstance(connection, str) else connection
        starts = dict.fromkeys(topic_partitions(properties, self.topic, self._metadata_timeout_s), BEGINNING)
        for partition, last in handover.partitions.items():
            starts[partition] = last.offset
            self._book_time_us[partition] = last.book_time_us
        log.info("%s: books of %s from the archive, Kafka from offsets %s", self.topic, moment, starts)
        return starts

    @property
    def books(self) -> dict[str, OrderBook]:
        """Every book followed, by instrument (the waiting and unreliable ones too)."""
        return self.builder.books

    def updates(self, timeout_s: float = 0.1) -> Iterator[BookUpdate]:
        """The updates of the records that came (waiting at most ``timeout_s`` for some).

        Each record is decoded and applied when its update is handed out, so the book is as of that
        update until the next one; records not handed out yet (a loop left early) come on the next
        call. A value that is not a book record is logged and counted in :attr:`bad_records`; the
        next change of its book shows the gap.
        """
        apply, joins, history = self.builder.apply, self._joins, self._quiet_until_us is not None
        try:
            for message in self._read_ahead_first() if self._read_ahead else self._reader.stream(timeout_s):
                record, partition = message.record, message.partition
                if joins and partition in joins and self._join(joins.pop(partition), message):
                    continue
                if history and self._is_history(partition, message.timestamp_ms):
                    apply(record, partition)
                    continue
                book = apply(record, partition)
                if book is not None:
                    yield BookUpdate(book, record, partition, message.offset)
        except RecordError as exc:  # the records before it came; what follows it comes on the next call
            self._bad_record(exc)
        if self._group_id is not None and time.monotonic() - self._committed_at >= COMMIT_INTERVAL_S:
            self.commit()

    def _bad_record(self, error: RecordError) -> None:
        """A value that is not a book record: counted and logged; the next change of its book shows the gap."""
        self.bad_records += 1
        log.error("%s", error)

    def _read_ahead_first(self) -> Iterator[TopicRecord]:
        """The records read ahead to check the archive's joins (:meth:`_check_joins`), not handed out yet."""
        read_ahead = self._read_ahead
        while read_ahead:
            yield read_ahead.popleft()

    def fetch(self, timeout_s: float = 0.1) -> int:
        """Fetch records (waiting at most ``timeout_s``) without decoding or applying them:
        :meth:`updates` then takes them without waiting. For a caller that must not hold a lock while
        Kafka is waited on. Returns how many messages wait to be taken."""
        return self._reader.fill(timeout_s)

    def _check_joins(self, timeout_s: float) -> None:
        """Read each joined partition's first record now, so that an archive that does not continue
        into the topic is refused when the consumer is made, not at some later record. What was
        read is handed out first by :meth:`updates`."""
        deadline = time.monotonic() + timeout_s
        waiting = set(self._joins)
        while waiting and time.monotonic() < deadline:
            try:
                for message in self._reader.stream(0.1):
                    self._read_ahead.append(message)
                    if message.partition in waiting:
                        waiting.discard(message.partition)
                        self._joins[message.partition].check(message)  # raises ArchiveMismatch
            except RecordError as exc:
                self._bad_record(exc)
            waiting = {p for p in waiting if not self._reader.at_end(p)}

    def _join(self, last: LastArchived, message: TopicRecord) -> bool:
        """Check the first record of a partition seeded from the archive; whether it is the archive's own."""
        why = last.check(message)
        if why is not None:
            log.error("%s: %s", self.topic, why)
            self.builder.mark_stream(last.partition, why)
        return message.offset == last.offset

    def _is_history(self, partition: int, timestamp_ms: int) -> bool:
        book_time = max(self._book_time_us.get(partition, 0), timestamp_ms * 1000)
        self._book_time_us[partition] = book_time
        return book_time <= self._quiet_until_us

    def __iter__(self) -> Iterator[BookUpdate]:
        """Every update, as it comes, forever."""
        while True:
            yield from self.updates()

    def positions(self) -> dict[int, int | None]:
        """The next offset to read, per partition."""
        return self._reader.positions()

    def commit(self) -> None:
        """Commit the positions to ``group_id`` (for monitoring only)."""
        offsets = {p: o for p, o in self._reader.positions().items() if o is not None}
        if offsets:
            self._reader.commit(offsets)
        self._committed_at = time.monotonic()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BookConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
