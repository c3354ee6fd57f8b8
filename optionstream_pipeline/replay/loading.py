"""The replay's reading of the archive: the window checked, the books at its start, its rows streamed.

Everything DuckDB is here, so that :mod:`.source` stays pure. The window's rows are read one hour
directory at a time (the archive's own partitioning: ``date``/``hour`` prune the files), each hour
sorted in stream order, on a background thread that stays at most :data:`PREFETCH_EVENTS` events
ahead of the replay; each hour read is logged, so a day of the whole chain shows its progress.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from optionstream_pipeline.archive.ticker_schema import DERIBIT_COLUMNS
from optionstream_pipeline.query.database import check_window, open_archive
from optionstream_pipeline.replay.source import (
    ArchiveSource,
    Event,
    SeedBook,
    book_events,
    epoch_us,
    merged,
    ticker_events,
)

log = logging.getLogger(__name__)

PREFETCH_EVENTS = 100_000
FETCH_ROWS = 10_000
TICKER_TABLE = "ticker"  # <archive>/ticker/date=/hour=/...parquet, as the book table's files
HOUR = timedelta(hours=1)
BOOK_ORDER = "book_time, topic_incarnation, kafka_partition, kafka_offset, side DESC, level"
TICKER_ORDER = "ticker_time, topic_incarnation, kafka_partition, kafka_offset"
# What the replay reads of each row, times as integer microseconds: a TIMESTAMPTZ becoming a Python
# datetime costs more than all the rest of a row (docs/benchmarks.md, "The replay").
_WHERE = "topic_incarnation, kafka_partition, kafka_offset"
BOOK_COLUMNS = (
    "symbol, interval, record_type, capture_id, epoch_us(timestamp) AS timestamp_us, "
    f"epoch_us(book_time) AS book_time_us, change_id, prev_change_id, side, level, action, price, amount, {_WHERE}"
)
TICKER_COLUMNS = (
    "symbol, interval, epoch_us(timestamp) AS timestamp_us, epoch_us(ticker_time) AS ticker_time_us, "
    f"{', '.join(DERIBIT_COLUMNS)}, {_WHERE}"
)


def open_replay(
    root: str | Path, start: datetime, stop: datetime, speed: float | None, start_delay_s: float = 0.0
) -> ArchiveSource:
    """The archive's window ``(start, stop]`` as a data source; refuses a window without data
    (:class:`~optionstream_pipeline.query.database.NoArchive`, naming what the archive holds)."""
    start, stop = start.astimezone(UTC), stop.astimezone(UTC)  # the hour directories are UTC
    connection = open_archive(root, ":memory:")  # never holds archive.duckdb: a query may run beside
    check_window(connection, start, stop)
    tickers = ticker_source(connection, root)
    seeds = seed_books(connection, start)
    channels = window_channels(connection, tickers, start, stop)
    log.info("replay window %s to %s: %d books at the start, %d channels", start, stop, len(seeds), len(channels))
    reader = connection.cursor()  # the loader thread's own connection to the same database
    feed = PrefetchFeed(window_events(reader, tickers, start, stop))
    return ArchiveSource(feed, start, stop, seeds, channels, speed, start_delay_s, session_ends(connection))


def ticker_source(connection: duckdb.DuckDBPyConnection, root: str | Path) -> str | None:
    """The SQL relation of the archive's ticker rows (the ``ticker`` view, which leaves out files a
    compaction replaced), or ``None`` when the archive holds no ticker file."""
    [(files,)] = connection.execute("SELECT count(*) FROM ticker_files").fetchall()
    return "ticker" if files else None


def session_ends(connection: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Each capture session's last ``book_time`` (µs): where the replay ends a killed session's books."""
    return dict(connection.execute("SELECT capture_id, ended_us FROM session_ends").fetchall())


def seed_books(connection: duckdb.DuckDBPyConnection, start: datetime) -> list[SeedBook]:
    """Every book at ``start`` (``books_at``), with the channel interval of its last record."""
    rows = connection.execute(
        """
        WITH intervals AS (SELECT symbol, arg_max(interval, book_time) AS interval
                           FROM book_records_at($1) GROUP BY symbol)
        SELECT b.symbol, i.interval, b.reliable, b.change_id, b.exchange_time, b.bids, b.asks, b.capture_id
        FROM books_at($1) b JOIN intervals i USING (symbol) ORDER BY b.symbol
        """,
        [start],
    ).fetchall()
    return [
        SeedBook(
            symbol,
            interval,
            reliable,
            change_id,
            epoch_us(exchange_time) // 1000 if exchange_time is not None else 0,
            [(level["price"], level["amount"]) for level in bids],
            [(level["price"], level["amount"]) for level in asks],
            capture_id,
        )
        for symbol, interval, reliable, change_id, exchange_time, bids, asks, capture_id in rows
    ]


def window_channels(
    connection: duckdb.DuckDBPyConnection, tickers: str | None, start: datetime, stop: datetime
) -> list[str]:
    """The book (and ticker) channels whose instrument and interval the window holds."""
    sql = "SELECT DISTINCT 'book.' || symbol || '.' || interval FROM book WHERE book_time > $1 AND book_time <= $2"
    if tickers is not None:
        sql += (
            f" UNION SELECT DISTINCT 'ticker.' || symbol || '.' || interval FROM {tickers}"
            " WHERE ticker_time > $1 AND ticker_time <= $2"
        )
    return sorted(channel for (channel,) in connection.execute(sql, [start, stop]).fetchall())


def window_events(
    connection: duckdb.DuckDBPyConnection, tickers: str | None, start: datetime, stop: datetime
) -> Iterator[Event]:
    """The window's book records and tickers in stream order, one hour directory at a time."""
    hour = start.replace(minute=0, second=0, microsecond=0)
    played = 0
    while hour <= stop:
        books = book_events(_rows(connection, "book", BOOK_COLUMNS, "book_time", BOOK_ORDER, hour, start, stop))
        found = ticker_events(
            _rows(connection.cursor(), tickers, TICKER_COLUMNS, "ticker_time", TICKER_ORDER, hour, start, stop)
        )
        before = played
        for event in merged(books, found):  # lazily: two cursors, one per table, each sorted
            played += 1
            yield event
        log.info("replay read hour %s: %d records (%d so far)", f"{hour:%Y-%m-%d %H}:00", played - before, played)
        hour += HOUR


def _rows(
    connection: duckdb.DuckDBPyConnection,
    table: str | None,
    columns: str,
    time_column: str,
    order: str,
    hour: datetime,
    start: datetime,
    stop: datetime,
) -> Iterator[dict]:
    """One hour directory's rows of ``table`` inside ``(start, stop]``, in ``order``, as dicts."""
    if table is None:
        return
    cursor = connection.execute(
        f"SELECT {columns} FROM {table} WHERE date = $1 AND hour = $2 AND {time_column} > $3 AND {time_column} <= $4 "
        f"ORDER BY {order}",
        [hour.date(), hour.hour, start, stop],
    )
    columns = [description[0] for description in cursor.description]
    while batch := cursor.fetchmany(FETCH_ROWS):
        for row in batch:
            yield dict(zip(columns, row, strict=True))


class PrefetchFeed:
    """An :class:`~optionstream_pipeline.replay.source.EventFeed` filled by a daemon thread from an
    iterator, at most ``capacity`` events ahead: the event loop never waits on DuckDB."""

    def __init__(self, events: Iterator[Event], capacity: int = PREFETCH_EVENTS) -> None:
        self._events = events
        self._queue: deque[Event] = deque()
        self._room = threading.Condition()
        self._capacity = capacity
        self._finished = False
        self.error: BaseException | None = None
        threading.Thread(target=self._fill, name="replay-loader", daemon=True).start()

    def _fill(self) -> None:
        try:
            for event in self._events:
                with self._room:
                    self._room.wait_for(lambda: len(self._queue) < self._capacity)
                    self._queue.append(event)
        except Exception as exc:  # the replay goes on to its end with what was read, and says why
            self.error = exc
            log.exception("replay: reading the archive failed; the replay ends here")
        finally:
            self._finished = True

    def peek(self) -> Event | None:
        return self._queue[0] if self._queue else None

    def pop(self) -> None:
        with self._room:
            self._queue.popleft()
            self._room.notify()

    @property
    def done(self) -> bool:
        return self._finished and not self._queue
