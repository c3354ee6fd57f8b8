"""Where history hands over to live: the archive's books at a past time T, and where Kafka goes on.

A consumer started from T takes every book from the archive's book at T (DuckDB, the checkpoint of
T's hour plus the rows since) and reads each Kafka partition from the archive's last record at or
before T. That record is read again on purpose: Kafka must still hold the very record the archive
holds at that offset, else the two are not the same topic (it was deleted and recreated since) and
joining them would mix two streams. From the next offset on nothing is duplicated (the archive's
rows stop there) and nothing is missing (Kafka's offsets are contiguous); a partition whose records
after the archive's were already removed by retention is reported as a gap, never skipped silently.

Only the archive's newest incarnation of each partition can continue into the live topic; a
partition it holds nothing of at T is read from its earliest record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from optionstream_pipeline.consume.books import WAITING, OrderBook, session_ended
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.query.series import SESSION_ENDED


class ArchiveMismatch(RuntimeError):
    """The archive does not continue into the topic as it is now."""


@dataclass(frozen=True, slots=True)
class LastArchived:
    """A partition's last archived record at or before T, as Kafka must still have it."""

    partition: int
    offset: int
    instrument: str
    record_type: str
    local_timestamp_us: int
    capture_id: str
    book_time_us: int  # the partition's book_time at that record

    def check(self, first: TopicRecord) -> str | None:
        """Compare the first record read from :attr:`offset`; returns why books are unreliable (a
        gap), ``None`` when the join is clean; raises :class:`ArchiveMismatch` when it cannot join."""
        if first.offset < self.offset:
            raise ArchiveMismatch(
                f"partition {self.partition} now starts at offset {first.offset}, before the archive's "
                f"{self.offset}: the topic was recreated after the archive was written; archive it again "
                f"(optionstream archive) or start from the earliest record"
            )
        if first.offset > self.offset + 1:
            return (
                f"gap: offsets {self.offset + 1} to {first.offset - 1} of partition {self.partition} are no "
                f"longer in Kafka (retention); the archive has what it read of them (optionstream query)"
            )
        if first.offset == self.offset:
            record = first.record
            seen = (record.instrument, record.type, record.local_timestamp_us)
            if seen != (self.instrument, self.record_type, self.local_timestamp_us):
                raise ArchiveMismatch(
                    f"partition {self.partition} offset {self.offset} holds {_shown(*seen)} in Kafka but "
                    f"{_shown(self.instrument, self.record_type, self.local_timestamp_us)} in the archive: the "
                    f"topic was recreated after the archive was written"
                )
        return None


def _shown(instrument: str, record_type: str, local_timestamp_us: int) -> str:
    return f"a {record_type} of {instrument} received at {local_timestamp_us} µs"


@dataclass(frozen=True, slots=True)
class Handover:
    """The state at ``moment`` and where each partition's records go on."""

    moment: datetime
    books: list[OrderBook]
    partitions: dict[int, LastArchived]


def handover_at(root: str | Path, topic: str, moment: datetime) -> Handover:
    """The archive's books at ``moment`` and each partition's last record then (raises
    :class:`~optionstream_pipeline.query.database.NoArchive` naming what the archive does hold)."""
    # DuckDB only here: a consumer that starts live (and the capture command line) never loads it.
    from optionstream_pipeline.query.database import NoArchive, archive_span, open_archive

    connection = open_archive(root)
    try:
        topics = sorted(row[0] for row in connection.execute("SELECT DISTINCT topic FROM book_files").fetchall())
        if topic not in topics:
            raise NoArchive(f"the archive at {root} holds topic(s) {', '.join(topics)}, not {topic}")
        first, _ = archive_span(connection)
        if moment < first:
            raise NoArchive(f"the archive at {root} starts at {first}, after {moment}")
        connection.execute(_NEWEST, [topic])
        partitions = {row[0]: LastArchived(*row) for row in connection.execute(_LAST_RECORDS, [moment]).fetchall()}
        books = [
            OrderBook(
                symbol,
                {level["price"]: level["amount"] for level in bids},
                {level["price"]: level["amount"] for level in asks},
                None if why == WAITING else change_id,
                exchange_ms,
                local_us,
                capture_id,
                partition,
                why,
            )
            for symbol, change_id, why, bids, asks, exchange_ms, local_us, capture_id, partition in (
                connection.execute(_BOOKS, [moment]).fetchall()
            )
        ]
    finally:
        connection.close()
    for book in books:
        book.why = _as_live(book, partitions.get(book.stream))
    return Handover(moment, books, partitions)


def _as_live(book: OrderBook, last: LastArchived | None) -> str | None:
    """Why the book is unreliable as a consumer that read the topic up to T sees it.

    The archive knows afterwards when a capture session ended (its last record, in any partition);
    a live consumer learns it only when the next session's first record reaches the partition
    (:mod:`.books`). A consumer started from T behaves as one that read up to T, so the live rule
    replaces the archive's there.
    """
    why = None if book.why is not None and book.why.startswith(SESSION_ENDED) else book.why
    if why is None and last is not None and book.capture_id != last.capture_id:
        return session_ended(book.capture_id)
    return why


_NEWEST = """
CREATE OR REPLACE TEMP TABLE newest AS
SELECT partition, max(incarnation) AS incarnation FROM book_files WHERE topic = ? GROUP BY partition
"""

_LAST_RECORDS = """
SELECT r.kafka_partition, max(r.kafka_offset), arg_max(r.symbol, r.kafka_offset),
       arg_max(r.record_type, r.kafka_offset), arg_max(epoch_us(r.local_timestamp), r.kafka_offset),
       arg_max(r.capture_id, r.kafka_offset), max(epoch_us(r.book_time))
FROM book_records_at(?::TIMESTAMPTZ) r
JOIN newest n ON n.partition = r.kafka_partition AND n.incarnation = r.topic_incarnation
GROUP BY r.kafka_partition
"""

_BOOKS = """
SELECT b.symbol, b.change_id, b.why, b.bids, b.asks,
       epoch_ms(b.exchange_time), epoch_us(b.local_timestamp), b.capture_id, b.kafka_partition
FROM books_at(?::TIMESTAMPTZ) b
JOIN newest n ON n.partition = b.kafka_partition AND n.incarnation = b.topic_incarnation
"""
