"""Books for tests: synthetic record streams written straight into an archive, and the reference the
book at T is checked against (the topic's records replayed by the consumer's ``BookBuilder``)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from optionstream_pipeline.archive.checkpoints import build_checkpoints
from optionstream_pipeline.archive.layout import ArchiveFile, hour_of
from optionstream_pipeline.archive.progress import Fingerprint
from optionstream_pipeline.archive.schema import book_times, explode
from optionstream_pipeline.archive.store import ArchiveStore, FileState
from optionstream_pipeline.consume.books import WAITING, BookBuilder
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.query.database import open_archive
from optionstream_pipeline.records import book

T0 = 1_764_576_000_000  # ms, 2025-12-01 08:00 UTC
US = timedelta(microseconds=1)
# reliable; why not, in a word (waiting, gap, disconnect, capture: the session ended); bids; asks
Book = tuple[bool, str | None, list[tuple[float, float]], list[tuple[float, float]]]


def levels(*items: tuple[str, float, float]) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode([list(item) for item in items]))


class Stream:
    """The records of one Kafka partition (one topic incarnation), in offset order, at T0 + ``at`` ms."""

    def __init__(self, partition: int = 0, incarnation: int = 0) -> None:
        self.partition = partition
        self.incarnation = incarnation
        self.records: list[TopicRecord] = []

    def add(self, value: bytes, at_ms: int) -> None:
        record = TopicRecord(self.partition, len(self.records), T0 + at_ms, "", value, book.decode_record(value))
        self.records.append(record)

    def snapshot(self, name: str, at: int, change_id: int, session: str = "a", bids=(), asks=(),
                 reason: str = "subscribe") -> None:  # fmt: skip
        meta = book.encode_capture_meta(session, 0)
        value = book.encode_snapshot(
            name, "100ms", T0 + at, (T0 + at) * 1000, change_id, levels(*bids), levels(*asks), meta, reason
        )
        self.add(value, at)

    def change(self, name: str, at: int, change_id: int, prev: int, session: str = "a", bids=(), asks=()) -> None:
        self.add(book.encode_change(name, "100ms", T0 + at, (T0 + at) * 1000, change_id, prev, levels(*bids),
                                    levels(*asks), book.encode_capture_meta(session, 0)), at)  # fmt: skip

    def marker(self, kind: str, name: str, at: int, reason: str, session: str = "a") -> None:
        self.add(
            book.encode_marker(kind, name, "100ms", (T0 + at) * 1000, reason, book.encode_capture_meta(session)), at
        )

    def gap(self, name: str, at: int, change_id: int, prev: int, expected: int, session: str = "a") -> None:
        self.add(book.encode_gap(name, "100ms", T0 + at, (T0 + at) * 1000, change_id, prev, expected,
                                 book.encode_capture_meta(session, 0)), at)  # fmt: skip

    def write(self, store: ArchiveStore, topic: str = "t", per_file: int = 1_000_000, checkpoints: bool = True) -> None:
        """Archive the stream as the archiver would: a file per hour of ``book_time`` (and per
        ``per_file`` records), the closed hours' checkpoints after each file."""
        times = book_times(self.records, 0)
        for _, run in itertools.groupby(range(len(self.records)), key=lambda index: hour_of(times[index])):
            indexes = list(run)
            for start in range(0, len(indexes), per_file):
                chunk = indexes[start : start + per_file]
                first, last = chunk[0], chunk[-1]
                records, chunk_times = self.records[first : last + 1], times[first : last + 1]
                file = ArchiveFile(topic, self.partition, self.incarnation, first, last, hour_of(times[first]))
                table = explode(records, chunk_times, self.incarnation)
                store.write(file, table, FileState(chunk_times[-1], Fingerprint.of(records[-1])))
                if checkpoints:
                    build_checkpoints(store, topic, self.partition)

    def archive(self, root: Path):
        """Write the stream into an archive at ``root`` and open it (in memory)."""
        self.write(ArchiveStore(root))
        return open_archive(root, ":memory:")


class Replay:
    """The reference: the topic's records in stream order, replayed by the consumer's BookBuilder.

    ``streams`` are the records of each partition (or of each incarnation of one), in offset order;
    an incarnation comes after the one it replaced.
    """

    def __init__(self, streams: Iterable[list[TopicRecord]]) -> None:
        self.stream: list[tuple[datetime, int, int, TopicRecord]] = []
        for index, records in enumerate(streams):
            latest = 0
            for record in records:
                latest = max(latest, record.timestamp_ms * 1000)  # book_time: never back in a partition
                self.stream.append((as_time(latest), index, record.offset, record))
        self.stream.sort(key=lambda item: item[:3])
        self.session_end: dict[str, datetime] = {}
        for time, _, _, record in self.stream:
            self.session_end[record.record.capture.id] = max(time, self.session_end.get(record.record.capture.id, time))

    @classmethod
    def of_partitions(cls, records: Iterable[TopicRecord]) -> Replay:
        by_partition: dict[int, list[TopicRecord]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        return cls(sorted(found, key=lambda r: r.offset) for _, found in sorted(by_partition.items()))

    @property
    def times(self) -> list[datetime]:
        return [time for time, *_ in self.stream]

    def books_at(self, moment: datetime) -> dict[str, Book]:
        builder = BookBuilder(strict=False)
        last_session: dict[str, str] = {}
        last_kind: dict[str, str] = {}
        for time, stream, _, record in self.stream:
            if time > moment:
                break
            builder.apply(record.record, stream)
            last_session[record.record.instrument] = record.record.capture.id
            last_kind[record.record.instrument] = record.record.type
        # Followed (a record, and not unsubscribed last) but no snapshot yet: a book waiting for one.
        books = {name: (False, "waiting", [], []) for name, kind in last_kind.items() if kind != "unsubscribed"}
        for name, order_book in builder.books.items():
            if order_book.why == WAITING:
                continue
            why = None
            if last_kind[name] in ("gap", "disconnect"):
                why = last_kind[name]  # the marker that broke it
            elif moment > self.session_end[last_session[name]]:
                why = "capture"  # its session ended, without markers
            bids = sorted(((p, a) for p, a in order_book.bids.items() if a > 0), reverse=True)
            asks = sorted((p, a) for p, a in order_book.asks.items() if a > 0)
            books[name] = (why is None, why, bids, asks)
        return books


def as_time(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC) + us % 1_000_000 * US


def archive_books_at(connection, moment: datetime, instrument: str | None = None) -> dict[str, Book]:
    """``books_at(moment)`` (of every instrument, or of one) as the reference shows it."""
    rows = connection.execute(
        "SELECT symbol, reliable, why, bids, asks FROM books_at(?, instrument := ?)", [moment, instrument]
    ).fetchall()
    return {
        symbol: (
            reliable,
            why and why.split(" ")[0].rstrip(":"),
            [(b["price"], b["amount"]) for b in bids],
            [(a["price"], a["amount"]) for a in asks],
        )
        for symbol, reliable, why, bids, asks in rows
    }
