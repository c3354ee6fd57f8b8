"""DuckDB over the archive: views of the Parquet files and macros for what researchers ask.

:func:`open_archive` opens (and creates) a DuckDB database file beside the archive
(``<archive.path>/archive.duckdb``, which a DuckDB shell can open too: the views read the files at
query time, so they are never stale) and defines, each time, with ``CREATE OR REPLACE``:

- ``book``: every row of the archive (``read_parquet`` with Hive partitioning: ``date`` and ``hour``
  columns that prune), less the files a compaction has replaced but not removed yet;
- ``book_files``: the archive's files, with what their names and directories say;
- ``checkpoints`` and ``checkpoint_files``: the book checkpoints derived from ``book``
  (:mod:`optionstream_pipeline.archive.checkpoints`);
- ``session_ends``: each capture session's last ``book_time``, from the files' footers;
- ``books_at(moment)``: the state of every book at ``moment`` (below), one row per instrument;
- ``book_at(instrument, moment, depth := 10)``: one book at ``moment``, one row per level;
- ``chain_at(expiry, moment)``: one expiry's chain at ``moment``, calls and puts by strike;
- ``updates_between(instrument, start, stop)``: the rows of one instrument in ``[start, stop)``;
- ``top_of_book`` and ``unreliable_intervals``: through time (:mod:`optionstream_pipeline.query.series`).

**The book at T** is what replaying the instrument's records with ``book_time <= T`` in stream order
gives (``book_time`` never goes back within a Kafka partition, so this is a prefix of the stream):
the levels of its last snapshot, with every change after it applied. It is **reliable** when that
snapshot exists, the last record is not a ``gap`` or ``disconnect`` marker, and the capture session
that wrote it was still writing at T: a session that ended without markers (its process was killed)
leaves its books unreliable from its last record on, until their next snapshot. An instrument whose
last record is ``unsubscribed`` has no book.

It is computed from each partition's latest checkpoint at or before T and the partition's rows
from that checkpoint to T (``book_records_at``): about an hour of rows at most, whatever T. The
files outside that are never opened beyond their footer: DuckDB prunes them by name and statistics.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from optionstream_pipeline.archive.checkpoints import COLUMN_LIST, STREAM_ORDER, state_sql
from optionstream_pipeline.archive.layout import CHECKPOINTS, TABLE, TICKER_TABLE
from optionstream_pipeline.archive.storage import LocalStorage, storage_for
from optionstream_pipeline.archive.store import SESSIONS_KEY
from optionstream_pipeline.query import series, tickers

DATABASE_FILE = "archive.duckdb"


class NoArchive(LookupError):
    """The archive has no file yet, or none at the time asked about."""


def open_archive(root: str | Path, database: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A connection with the archive's views and macros (see the module's docstring), in UTC.

    ``root`` is a local directory or ``s3://bucket/prefix``. The database file is ``database``, else
    ``archive.duckdb`` in a local archive's directory; an archive on object storage gets an
    in-memory database (its files are read through the registered object-store filesystem).
    """
    storage = storage_for(root)
    if not any(_is_parquet(path) for path in storage.list(TABLE)):
        raise NoArchive(f"the archive at {storage.location} has no file yet: run `optionstream archive` first")
    if database is None and isinstance(storage, LocalStorage):
        database = storage.root / DATABASE_FILE
    try:
        connection = duckdb.connect(str(database or ":memory:"))
    except duckdb.IOException:  # another process holds the file (a DuckDB shell on it): same views, in memory
        connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute("SET parquet_metadata_cache = true")  # files are written whole and never changed
    storage.register(connection)
    has_checkpoints = any(_is_parquet(path) for path in storage.list(CHECKPOINTS))
    checkpoints = _CHECKPOINTS if has_checkpoints else _NO_CHECKPOINTS
    has_tickers = any(_is_parquet(path) for path in storage.list(TICKER_TABLE))
    ticker_glob = _quoted(storage.uri(f"{TICKER_TABLE}/*/*/*.parquet")) if has_tickers else None
    definitions = (
        _DEFINITIONS
        + checkpoints
        + tickers.ticker_views(ticker_glob)
        + series.WHY
        + tickers.MACROS
        + _MACROS
        + series.SERIES
    )
    values = {
        "{files}": _quoted(storage.uri(f"{TABLE}/*/*/*.parquet")),
        "{checkpoints}": _quoted(storage.uri(f"{CHECKPOINTS}/*/*/*.parquet")),
        "{columns}": COLUMN_LIST,
        "{sessions_key}": SESSIONS_KEY.decode(),
        "{state}": state_sql("FROM book_records_at(moment, instrument := instrument)"),
        "{prior_state}": state_sql(
            "FROM book_records_at(start::TIMESTAMPTZ - INTERVAL 1 MICROSECOND, instrument := instrument)"
        ),
        "{stream_order}": STREAM_ORDER,
        "{session_ended}": series.SESSION_ENDED,
    }
    for placeholder, value in values.items():
        definitions = definitions.replace(placeholder, value)
    connection.execute(definitions)
    return connection


def has_archive(root: str | Path) -> bool:
    """Whether the archive at ``root`` holds any file yet."""
    return any(_is_parquet(path) for path in storage_for(root).list(TABLE))


def _is_parquet(path: str) -> bool:
    """An archive or checkpoint file in its hour directory (not a temporary one)."""
    return path.count("/") == 3 and path.endswith(".parquet") and not path.rpartition("/")[2].startswith(".")


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def archive_span(connection: duckdb.DuckDBPyConnection) -> tuple[datetime, datetime]:
    """The first and last ``book_time`` the archive holds."""
    [span] = connection.execute("SELECT min(book_time), max(book_time) FROM book").fetchall()
    return span


def check_time(connection: duckdb.DuckDBPyConnection, at: datetime) -> None:
    """Refuse a time the archive holds no data for, saying what it does hold."""
    first, last = archive_span(connection)
    if first is None or not first <= at <= last:
        raise NoArchive(f"no archived data at {_shown(at)}: the archive spans {first} to {last}")


def _shown(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S.%f %Z}"


def check_window(connection: duckdb.DuckDBPyConnection, start: datetime, stop: datetime) -> None:
    """Refuse an empty window, or one the archive holds no data in, saying what it does hold."""
    if not start < stop:
        raise NoArchive(f"an empty window: {_shown(start)} is not before {_shown(stop)}")
    first, last = archive_span(connection)
    if first is None or stop <= first or start > last:
        raise NoArchive(f"no archived data from {_shown(start)} to {_shown(stop)}: the archive spans {first} to {last}")


_NAME = r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/([^/+]+)\+(\d+)\+(\d+)"
_DEFINITIONS = f"""
{tickers.files_view("book_files", "{files}")}
CREATE OR REPLACE VIEW book_rows AS
SELECT * FROM read_parquet('{{files}}', hive_partitioning = true, hive_types = {{'date': 'DATE', 'hour': 'INTEGER'}},
                           filename = true);

CREATE OR REPLACE VIEW book AS
SELECT * EXCLUDE (filename) FROM book_rows WHERE filename IN (SELECT file FROM book_files WHERE NOT replaced);

CREATE OR REPLACE VIEW session_ends AS
SELECT session.key AS capture_id, max(session.value) AS ended_us
FROM (
    SELECT unnest(map_entries(json_transform(decode(value), '"MAP(VARCHAR, BIGINT)"'))) AS session
    FROM parquet_kv_metadata('{{files}}') WHERE key = '{{sessions_key}}'::BLOB
)
GROUP BY ALL;
"""

_CHECKPOINTS = f"""
CREATE OR REPLACE VIEW checkpoint_files AS
WITH named AS (
    SELECT file, regexp_extract(file, '{_NAME}\\.parquet$', ['date', 'hour', 'topic', 'partition', 'incarnation']) AS n
    FROM glob('{{checkpoints}}')
)
SELECT file, n.topic AS topic, n.partition::INTEGER AS partition, n.incarnation::INTEGER AS incarnation,
       strptime(n.date || ' ' || n.hour || ' +0000', '%Y-%m-%d %H %z') AS boundary
FROM named WHERE n.topic <> '';

CREATE OR REPLACE VIEW checkpoint_rows AS
SELECT * FROM read_parquet('{{checkpoints}}', hive_partitioning = false, filename = true);
"""

_NO_CHECKPOINTS = """
CREATE OR REPLACE VIEW checkpoint_files AS
SELECT file, topic, partition, incarnation, hour_start AS boundary FROM book_files WHERE false;

CREATE OR REPLACE VIEW checkpoint_rows AS SELECT {columns}, filename FROM book_rows WHERE false;
"""

_MACROS = """
CREATE OR REPLACE VIEW checkpoints AS
SELECT c.*, f.boundary FROM checkpoint_rows c JOIN checkpoint_files f ON c.filename = f.file;

-- The rows the book at moment is computed from: each partition's (and incarnation's) latest checkpoint
-- at or before moment, then its rows from that checkpoint to moment. For one instrument, only the
-- partitions that hold it are read: an instrument's key maps it to one partition of an incarnation
-- (partitions are never added, see docs/queries.md), so when a checkpoint of the incarnation holds it,
-- the other partitions' checkpointed files cannot; an incarnation no checkpoint holds it in is read whole.
CREATE OR REPLACE MACRO book_records_at(moment, instrument := NULL) AS TABLE
WITH chosen AS (
    SELECT s.topic, s.partition, s.incarnation, max_by(c.file, c.boundary) AS file, max(c.boundary) AS boundary
    FROM (SELECT topic, partition, incarnation FROM book_files
          UNION SELECT topic, partition, incarnation FROM checkpoint_files) s
    LEFT JOIN checkpoint_files c ON c.topic = s.topic AND c.partition = s.partition
                                AND c.incarnation = s.incarnation AND c.boundary <= moment::TIMESTAMPTZ
    GROUP BY ALL
),
seeded AS (
    SELECT {columns}, filename FROM checkpoint_rows
    WHERE filename IN (SELECT file FROM chosen) AND (instrument IS NULL OR symbol = instrument)
),
holding AS (
    SELECT DISTINCT c.topic, c.partition, c.incarnation FROM chosen c JOIN seeded s ON s.filename = c.file
    WHERE instrument IS NOT NULL
),
reading AS (
    SELECT f.file, coalesce(c.boundary, '-infinity'::TIMESTAMPTZ) AS since
    FROM book_files f JOIN chosen c ON c.topic = f.topic AND c.partition = f.partition AND c.incarnation = f.incarnation
    WHERE NOT f.replaced AND f.hour_start <= moment::TIMESTAMPTZ AND (c.boundary IS NULL OR f.hour_start >= c.boundary)
      AND (instrument IS NULL
           OR EXISTS (SELECT 1 FROM holding h WHERE h.topic = f.topic AND h.partition = f.partition
                                               AND h.incarnation = f.incarnation)
           OR NOT EXISTS (SELECT 1 FROM holding h WHERE h.topic = f.topic AND h.incarnation = f.incarnation))
)
SELECT {columns} FROM seeded
UNION ALL
SELECT {columns} FROM book_rows b JOIN reading r ON b.filename = r.file
WHERE b.book_time <= moment::TIMESTAMPTZ AND b.book_time >= r.since AND (instrument IS NULL OR b.symbol = instrument);

CREATE OR REPLACE MACRO books_at(moment, instrument := NULL) AS TABLE
WITH state AS ({state}),
books AS (
    SELECT symbol, any_value(expiry) AS expiry, any_value(strike) AS strike, any_value(option_type) AS option_type,
           arg_max({'type': record_type, 'reason': reason, 'capture_id': capture_id, 'change_id': change_id,
                    'book_time': book_time, 'local_timestamp': local_timestamp, 'partition': kafka_partition,
                    'incarnation': topic_incarnation},
                   {stream_order}) AS last,
           arg_max({'change_id': change_id, 'timestamp': timestamp}, {stream_order})
               FILTER (WHERE record_type IN ('snapshot', 'change')) AS updated,
           bool_or(record_type = 'snapshot') AS has_snapshot,
           list({'price': price, 'amount': amount} ORDER BY price DESC) FILTER (WHERE side = 'bid') AS bids,
           list({'price': price, 'amount': amount} ORDER BY price) FILTER (WHERE side = 'ask') AS asks
    FROM state GROUP BY symbol
),
judged AS (
    SELECT b.*, e.ended_us,
           unreliable_why(b.has_snapshot, b.last.type, b.last.reason, b.last.capture_id, e.ended_us,
                          epoch_us(moment::TIMESTAMPTZ)) AS why
    FROM books b LEFT JOIN session_ends e ON e.capture_id = b.last.capture_id
)
SELECT symbol, expiry, strike, option_type, last.book_time AS as_of, updated.change_id AS change_id,
       why IS NULL AS reliable, why, coalesce(bids, []) AS bids, coalesce(asks, []) AS asks,
       updated.timestamp AS exchange_time, last.local_timestamp AS local_timestamp, last.capture_id AS capture_id,
       last.partition AS kafka_partition,
       last.incarnation AS topic_incarnation
FROM judged WHERE last.type <> 'unsubscribed';

CREATE OR REPLACE MACRO book_at(instrument, moment, depth := 10) AS TABLE
WITH state AS (SELECT * FROM books_at(moment, instrument := instrument)),
levels AS (
    SELECT 'bid' AS side, unnest(bids[1:depth]) AS level, generate_subscripts(bids[1:depth], 1) - 1 AS position
    FROM state
    UNION ALL
    SELECT 'ask', unnest(asks[1:depth]), generate_subscripts(asks[1:depth], 1) - 1 FROM state
)
SELECT state.symbol, side, position AS level, level.price AS price, level.amount AS amount,
       state.as_of, state.change_id, state.reliable, state.why
FROM state LEFT JOIN levels ON true
ORDER BY side DESC, position;

CREATE OR REPLACE MACRO chain_at(expiry_date, moment) AS TABLE
WITH state AS (SELECT * FROM books_at(moment) WHERE expiry::DATE = expiry_date::DATE),
quoted AS (  -- the rebuilt top of book beside the latest ticker at or before moment (tickers_at: an ASOF JOIN)
    SELECT s.*, t.bid_iv, t.ask_iv, t.mark_price, t.mark_iv, t.delta, t.underlying_price
    FROM state s LEFT JOIN tickers_at(moment, expiry_date := expiry_date) t ON t.symbol = s.symbol
)
SELECT strike,
       max(bids[1].price) FILTER (WHERE option_type = 'call') AS call_bid,
       max(bids[1].amount) FILTER (WHERE option_type = 'call') AS call_bid_size,
       max(asks[1].price) FILTER (WHERE option_type = 'call') AS call_ask,
       max(asks[1].amount) FILTER (WHERE option_type = 'call') AS call_ask_size,
       bool_and(reliable) FILTER (WHERE option_type = 'call') AS call_reliable,
       max(bid_iv) FILTER (WHERE option_type = 'call') AS call_bid_iv,
       max(ask_iv) FILTER (WHERE option_type = 'call') AS call_ask_iv,
       max(mark_price) FILTER (WHERE option_type = 'call') AS call_mark,
       max(mark_iv) FILTER (WHERE option_type = 'call') AS call_mark_iv,
       max(delta) FILTER (WHERE option_type = 'call') AS call_delta,
       max(bids[1].price) FILTER (WHERE option_type = 'put') AS put_bid,
       max(bids[1].amount) FILTER (WHERE option_type = 'put') AS put_bid_size,
       max(asks[1].price) FILTER (WHERE option_type = 'put') AS put_ask,
       max(asks[1].amount) FILTER (WHERE option_type = 'put') AS put_ask_size,
       bool_and(reliable) FILTER (WHERE option_type = 'put') AS put_reliable,
       max(bid_iv) FILTER (WHERE option_type = 'put') AS put_bid_iv,
       max(ask_iv) FILTER (WHERE option_type = 'put') AS put_ask_iv,
       max(mark_price) FILTER (WHERE option_type = 'put') AS put_mark,
       max(mark_iv) FILTER (WHERE option_type = 'put') AS put_mark_iv,
       max(delta) FILTER (WHERE option_type = 'put') AS put_delta,
       max(underlying_price) AS underlying_price
FROM quoted GROUP BY strike ORDER BY strike;

CREATE OR REPLACE MACRO updates_between(instrument, start, stop) AS TABLE
SELECT * FROM book
WHERE symbol = instrument AND book_time >= start::TIMESTAMPTZ AND book_time < stop::TIMESTAMPTZ
ORDER BY book_time, topic_incarnation, kafka_offset, side DESC, level;
"""
