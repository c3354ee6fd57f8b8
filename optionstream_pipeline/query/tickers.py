"""DuckDB over the ticker table: its views, the latest ticker of each option at T, and the IV smile.

- ``ticker_files`` and ``ticker``: as ``book_files`` and ``book`` (files a compaction replaced left out);
  empty, with the table's columns, while the archive holds no ticker file;
- ``tickers_at(moment, expiry_date := NULL, lookback := INTERVAL 1 HOUR)``: each option's latest ticker
  at or before ``moment`` (by ``ticker_time``, then stream order), an ``ASOF JOIN``. A ticker older
  than ``lookback`` is not taken: Deribit sends an option's ticker every 100 ms while it is listed,
  so an older one means capture was not running, and the bound lets DuckDB open only the hours it needs;
- ``smile_at(expiry_date, moment)``: mark, bid and ask IV by strike for one expiry, calls and puts.

``chain_at`` (:mod:`optionstream_pipeline.query.database`) joins ``tickers_at`` to the rebuilt books.
"""

from __future__ import annotations

import pyarrow as pa

from optionstream_pipeline.archive.ticker_schema import TICKER_SCHEMA

TICKER_ORDER = "((epoch_us(ticker_time)::HUGEINT << 64) + (topic_incarnation::HUGEINT << 48) + kafka_offset)"
_DUCKDB_TYPES = {
    pa.float64(): "DOUBLE",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
}


def _duckdb_type(kind: pa.DataType) -> str:
    if pa.types.is_dictionary(kind) or pa.types.is_string(kind):
        return "VARCHAR"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ"
    return _DUCKDB_TYPES[kind]


def files_view(view: str, glob: str) -> str:
    """The files of one table with what their names and directories say; ``replaced``: the input of a
    compaction whose clean-up has not run yet (a file before it, by first offset and widest first,
    reaches as far)."""
    name = r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/([^/+]+)\+(\d+)\+(\d+)\+(\d+)-(\d+)\.parquet$"
    return f"""
CREATE OR REPLACE VIEW {view} AS
WITH named AS (
    SELECT file,
           regexp_extract(file, '{name}', ['date', 'hour', 'topic', 'partition', 'incarnation', 'first', 'last']) AS n
    FROM glob('{glob}')
),
files AS (
    SELECT file, n.topic AS topic, n.partition::INTEGER AS partition, n.incarnation::INTEGER AS incarnation,
           n.first::BIGINT AS first_offset, n.last::BIGINT AS last_offset,
           strptime(n.date || ' ' || n.hour || ' +0000', '%Y-%m-%d %H %z') AS hour_start
    FROM named WHERE n.topic <> ''
)
SELECT *, coalesce(max(last_offset) OVER (
    PARTITION BY topic, partition, incarnation ORDER BY first_offset, last_offset DESC
    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) >= last_offset, false) AS replaced
FROM files;
"""


def ticker_views(glob: str | None) -> str:
    """``ticker_files`` and ``ticker`` over the files ``glob`` matches; ``None``: there is none yet."""
    if glob is None:
        columns = ", ".join(f'NULL::{_duckdb_type(field.type)} AS "{field.name}"' for field in TICKER_SCHEMA)
        return f"""
CREATE OR REPLACE VIEW ticker_files AS SELECT * FROM book_files WHERE false;
CREATE OR REPLACE VIEW ticker_rows AS
SELECT {columns}, NULL::DATE AS date, NULL::INTEGER AS hour, NULL::VARCHAR AS filename WHERE false;
CREATE OR REPLACE VIEW ticker AS SELECT * EXCLUDE (filename) FROM ticker_rows;
"""
    return (
        files_view("ticker_files", glob)
        + f"""
CREATE OR REPLACE VIEW ticker_rows AS
SELECT * FROM read_parquet('{glob}', hive_partitioning = true, hive_types = {{'date': 'DATE', 'hour': 'INTEGER'}},
                           filename = true);
CREATE OR REPLACE VIEW ticker AS
SELECT * EXCLUDE (filename) FROM ticker_rows WHERE filename IN (SELECT file FROM ticker_files WHERE NOT replaced);
"""
    )


MACROS = f"""
CREATE OR REPLACE MACRO tickers_at(moment, expiry_date := NULL, lookback := INTERVAL 1 HOUR) AS TABLE
WITH reading AS (
    SELECT file FROM ticker_files
    WHERE NOT replaced AND hour_start <= moment::TIMESTAMPTZ
      AND hour_start > moment::TIMESTAMPTZ - lookback - INTERVAL 1 HOUR
),
quotes AS (
    SELECT * EXCLUDE (filename, date, hour), {TICKER_ORDER} AS seq FROM ticker_rows
    WHERE filename IN (SELECT file FROM reading)
      AND ticker_time <= moment::TIMESTAMPTZ AND ticker_time >= moment::TIMESTAMPTZ - lookback
      AND (expiry_date IS NULL OR expiration::DATE = expiry_date::DATE)
),
asked AS (  -- the last stream position at moment: any ticker at or before it may be the latest
    SELECT DISTINCT symbol, (epoch_us(moment::TIMESTAMPTZ)::HUGEINT << 64) + ((1::HUGEINT << 64) - 1) AS seq
    FROM quotes
)
SELECT q.* EXCLUDE (seq) FROM asked a ASOF JOIN quotes q ON q.symbol = a.symbol AND a.seq >= q.seq;

CREATE OR REPLACE MACRO smile_at(expiry_date, moment) AS TABLE
SELECT strike,
       max(mark_iv) FILTER (WHERE type = 'call') AS call_mark_iv,
       max(bid_iv) FILTER (WHERE type = 'call') AS call_bid_iv,
       max(ask_iv) FILTER (WHERE type = 'call') AS call_ask_iv,
       max(delta) FILTER (WHERE type = 'call') AS call_delta,
       max(mark_iv) FILTER (WHERE type = 'put') AS put_mark_iv,
       max(bid_iv) FILTER (WHERE type = 'put') AS put_bid_iv,
       max(ask_iv) FILTER (WHERE type = 'put') AS put_ask_iv,
       max(delta) FILTER (WHERE type = 'put') AS put_delta,
       max(underlying_price) AS underlying_price,
       max(ticker_time) AS as_of
FROM tickers_at(moment, expiry_date := expiry_date)
GROUP BY strike ORDER BY strike;
"""
