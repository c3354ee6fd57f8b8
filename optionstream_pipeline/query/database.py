"""DuckDB over the archive: views of the Parquet files and macros for what researchers ask.

:func:`open_archive` opens (and creates) a DuckDB database file beside the archive
(``<archive.path>/archive.duckdb``, which a DuckDB shell can open too: the views read the files at
query time, so they are never stale) and defines, each time, with ``CREATE OR REPLACE``:

- ``book``: every row of the archive (``read_parquet`` with Hive partitioning: ``date`` and ``hour``
  columns that prune), less the files a compaction has replaced but not removed yet;
- ``book_files``: the archive's files, with what their names say;
- ``books_at(moment)``: the state of every book at ``moment`` (below), one row per instrument;
- ``book_at(instrument, moment, depth := 10)``: one book at ``moment``, one row per level;
- ``chain_at(expiry, moment)``: one expiry's chain at ``moment``, calls and puts by strike;
- ``updates_between(instrument, start, stop)``: the rows of one instrument in ``[start, stop)``.

**The book at T** is what replaying the instrument's records with ``book_time <= T`` in stream order
gives (``book_time`` never goes back within a Kafka partition, so this is a prefix of the stream):
the levels of its last snapshot, with every change after it applied. It is **reliable** when that
snapshot exists, the last record is not a ``gap`` or ``disconnect`` marker, and the capture session
that wrote it was still writing at T: a session that ended without markers (its process was killed)
leaves its books unreliable from its last record on, until their next snapshot. An instrument whose
last record is ``unsubscribed`` has no book.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from optionstream_pipeline.archive.layout import TABLE

DATABASE_FILE = "archive.duckdb"


class NoArchive(LookupError):
    """The archive has no file yet, or none at the time asked about."""


def open_archive(root: str | Path, database: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A connection with the archive's views and macros (see the module's docstring)."""
    root = Path(root).resolve()
    files = f"{root}/{TABLE}/*/*/*.parquet"
    if not any((root / TABLE).glob("date=*/hour=*/*.parquet")):
        raise NoArchive(f"the archive at {root} has no file yet: run `optionstream archive` first")
    try:
        connection = duckdb.connect(str(database or root / DATABASE_FILE))
    except duckdb.IOException:  # another process holds the file (a DuckDB shell on it): same views, in memory
        connection = duckdb.connect(":memory:")
    connection.execute(_DEFINITIONS.replace("{files}", files.replace("'", "''")))
    return connection


def archive_span(connection: duckdb.DuckDBPyConnection) -> tuple[datetime, datetime]:
    """The first and last ``book_time`` the archive holds."""
    [span] = connection.execute("SELECT min(book_time), max(book_time) FROM book").fetchall()
    return span


def check_time(connection: duckdb.DuckDBPyConnection, at: datetime) -> None:
    """Refuse a time the archive holds no data for, saying what it does hold."""
    first, last = archive_span(connection)
    if first is None or not first <= at <= last:
        raise NoArchive(f"no archived data at {at:%Y-%m-%d %H:%M:%S.%f %Z}: the archive spans {first} to {last}")


_DEFINITIONS = """
CREATE OR REPLACE VIEW book_files AS
SELECT file, regexp_extract(file, '([^/+]+)\\+(\\d+)\\+(\\d+)\\+(\\d+)-(\\d+)\\.parquet$',
                            ['topic', 'partition', 'incarnation', 'first_offset', 'last_offset']) AS name
FROM glob('{files}');

CREATE OR REPLACE VIEW replaced_files AS
SELECT a.file FROM book_files a JOIN book_files b
  ON a.name.topic = b.name.topic AND a.name.partition = b.name.partition
 AND a.name.incarnation = b.name.incarnation AND a.file <> b.file
 AND b.name.first_offset::BIGINT <= a.name.first_offset::BIGINT
 AND a.name.last_offset::BIGINT <= b.name.last_offset::BIGINT;

CREATE OR REPLACE VIEW book AS
SELECT * EXCLUDE (filename)
FROM read_parquet('{files}', hive_partitioning = true, hive_types = {'date': 'DATE', 'hour': 'INTEGER'},
                  filename = true)
WHERE filename NOT IN (SELECT file FROM replaced_files);

CREATE OR REPLACE MACRO books_at(moment) AS TABLE
WITH records AS (
    SELECT *, {'t': book_time, 'i': topic_incarnation, 'o': kafka_offset} AS seq
    FROM book WHERE book_time <= moment
),
per_symbol AS (
    SELECT symbol, any_value(expiry) AS expiry, any_value(strike) AS strike, any_value(option_type) AS option_type,
           max_by({'type': record_type, 'reason': reason, 'capture_id': capture_id, 'change_id': change_id,
                   'book_time': book_time}, seq) AS last,
           max(seq) FILTER (WHERE record_type = 'snapshot') AS any_snapshot_seq,
           max(seq) FILTER (WHERE record_type = 'unsubscribed') AS unsubscribed_seq
    FROM records GROUP BY symbol
),
last_records AS (  -- a snapshot from before the instrument was last unsubscribed starts no book
    SELECT * EXCLUDE (any_snapshot_seq, unsubscribed_seq),
           CASE WHEN unsubscribed_seq IS NULL OR any_snapshot_seq > unsubscribed_seq THEN any_snapshot_seq
           END AS snapshot_seq
    FROM per_symbol
),
sessions AS (
    SELECT capture_id, max(book_time) AS ended FROM book
    WHERE capture_id IN (SELECT last.capture_id FROM last_records) GROUP BY capture_id
),
levels AS (
    SELECT r.symbol, r.side, r.price, max_by(r.amount, {'s': r.seq, 'l': r.level}) AS amount
    FROM records r JOIN last_records l ON r.symbol = l.symbol
    WHERE l.snapshot_seq IS NOT NULL AND r.seq >= l.snapshot_seq AND r.side IS NOT NULL
    GROUP BY ALL
),
sides AS (
    SELECT symbol,
           list({'price': price, 'amount': amount} ORDER BY price DESC) FILTER (WHERE side = 'bid') AS bids,
           list({'price': price, 'amount': amount} ORDER BY price) FILTER (WHERE side = 'ask') AS asks
    FROM levels WHERE amount > 0 GROUP BY symbol
)
SELECT l.symbol, l.expiry, l.strike, l.option_type, l.last.book_time AS as_of, l.last.change_id AS change_id,
       CASE WHEN l.snapshot_seq IS NULL OR l.last.type IN ('gap', 'disconnect') OR moment > s.ended THEN false
            ELSE true END AS reliable,
       CASE WHEN l.snapshot_seq IS NULL THEN 'waiting for the first snapshot'
            WHEN l.last.type = 'gap' THEN 'gap: ' || l.last.reason
            WHEN l.last.type = 'disconnect' THEN 'disconnect: ' || l.last.reason
            WHEN moment > s.ended THEN 'capture session ' || l.last.capture_id || ' ended at ' || s.ended
                 || ' without markers'
       END AS why,
       coalesce(d.bids, []) AS bids, coalesce(d.asks, []) AS asks
FROM last_records l
JOIN sessions s ON s.capture_id = l.last.capture_id
LEFT JOIN sides d ON d.symbol = l.symbol
WHERE l.last.type <> 'unsubscribed';

CREATE OR REPLACE MACRO book_at(instrument, moment, depth := 10) AS TABLE
WITH state AS (SELECT * FROM books_at(moment) WHERE symbol = instrument),
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
WITH state AS (SELECT * FROM books_at(moment) WHERE expiry::DATE = expiry_date::DATE)
SELECT strike,
       max(bids[1].price) FILTER (WHERE option_type = 'call') AS call_bid,
       max(bids[1].amount) FILTER (WHERE option_type = 'call') AS call_bid_size,
       max(asks[1].price) FILTER (WHERE option_type = 'call') AS call_ask,
       max(asks[1].amount) FILTER (WHERE option_type = 'call') AS call_ask_size,
       bool_and(reliable) FILTER (WHERE option_type = 'call') AS call_reliable,
       max(bids[1].price) FILTER (WHERE option_type = 'put') AS put_bid,
       max(bids[1].amount) FILTER (WHERE option_type = 'put') AS put_bid_size,
       max(asks[1].price) FILTER (WHERE option_type = 'put') AS put_ask,
       max(asks[1].amount) FILTER (WHERE option_type = 'put') AS put_ask_size,
       bool_and(reliable) FILTER (WHERE option_type = 'put') AS put_reliable
FROM state GROUP BY strike ORDER BY strike;

CREATE OR REPLACE MACRO updates_between(instrument, start, stop) AS TABLE
SELECT * FROM book WHERE symbol = instrument AND book_time >= start AND book_time < stop
ORDER BY book_time, topic_incarnation, kafka_offset, side DESC, level;
"""
