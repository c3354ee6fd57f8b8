"""``optionstream query``: the archive's macros from the shell, as a table, CSV or Parquet.

    optionstream query book BTC-27JUN25-100000-C --at 2025-06-01T12:00:00Z --depth 5
    optionstream query chain 27JUN25 --at 2025-06-01T12:00:00Z
    optionstream query smile 27JUN25 --at 2025-06-01T12:00:00Z
    optionstream query updates BTC-27JUN25-100000-C --from 2025-06-01T12:00Z --to 2025-06-01T12:05Z
    optionstream query top BTC-27JUN25-100000-C --from 2025-06-01T12:00Z --to 2025-06-01T13:00Z --every 1s
    optionstream query quality --from 2025-06-01T00:00Z --to 2025-06-02T00:00Z
    optionstream query sql "SELECT record_type, count(*) FROM book GROUP BY 1"

The table is DuckDB's own rendering; ``--csv`` writes CSV to standard output, ``--parquet FILE`` a
Parquet file. A time the archive holds no data for is refused, naming what it holds.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from optionstream_pipeline.config import ConfigError, add_config_argument, load_settings

if TYPE_CHECKING:
    import duckdb


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query",
        help="query the archive (book at a time, chain, updates, SQL) through DuckDB",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV on standard output instead of a table")
    output.add_argument("--parquet", metavar="FILE", help="write the result to a Parquet file")
    parser.add_argument("--rows", type=int, default=60, help="rows shown in a table (default %(default)s)")
    what = parser.add_subparsers(dest="query", required=True, metavar="QUERY")
    book = what.add_parser("book", help="one instrument's book at a time, level by level")
    book.add_argument("instrument")
    book.add_argument("--at", required=True, type=moment, help="UTC time, e.g. 2025-06-01T12:00:00Z")
    book.add_argument("--depth", type=int, default=10)
    chain = what.add_parser(
        "chain", help="one expiry's chain at a time: calls | strike | puts, books beside IVs, mark and delta"
    )
    chain.add_argument("expiry", type=expiry_date, help="27JUN25 or 2025-06-27")
    chain.add_argument("--at", required=True, type=moment)
    smile = what.add_parser("smile", help="one expiry's implied volatility by strike at a time (mark, bid, ask IV)")
    smile.add_argument("expiry", type=expiry_date, help="27JUN25 or 2025-06-27")
    smile.add_argument("--at", required=True, type=moment)
    updates = what.add_parser("updates", help="one instrument's rows between two times")
    updates.add_argument("instrument")
    updates.add_argument("--from", dest="start", required=True, type=moment)
    updates.add_argument("--to", dest="stop", required=True, type=moment)
    top = what.add_parser("top", help="one instrument's best bid and ask, mid and spread: per update or resampled")
    top.add_argument("instrument")
    top.add_argument("--from", dest="start", required=True, type=moment)
    top.add_argument("--to", dest="stop", required=True, type=moment)
    top.add_argument("--every", type=period_ms, help="resample: the book every 250ms, 1s, 5m, 1h (default: per update)")
    quality = what.add_parser("quality", help="when books were unreliable, and why (gap, disconnect, no snapshot, ...)")
    quality.add_argument("--from", dest="start", required=True, type=moment)
    quality.add_argument("--to", dest="stop", required=True, type=moment)
    quality.add_argument("--instrument", help="one instrument (default: every one)")
    sql = what.add_parser("sql", help="any SQL over the views (book, book_files) and macros")
    sql.add_argument("statement")
    parser.set_defaults(func=run_query_command)


def moment(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: expected ISO 8601, e.g. 2025-06-01T12:00:00Z"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


_PERIOD = re.compile(r"(\d+)(ms|s|m|h)")
_PERIOD_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def period_ms(text: str) -> int:
    match = _PERIOD.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a period: expected e.g. 250ms, 1s, 5m or 1h")
    return int(match[1]) * _PERIOD_MS[match[2]]


def expiry_date(text: str) -> date:
    for pattern in ("%Y-%m-%d", "%d%b%y"):
        try:
            return datetime.strptime(text.upper() if "%b" in pattern else text, pattern).date()
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not an expiry: expected 27JUN25 or 2025-06-27")


# The chain as a trader reads it, calls | strike | puts (sizes and marks in --csv and --parquet).
CHAIN_COLUMNS = (
    "call_reliable, call_delta, call_mark_iv, call_bid_iv, call_bid, call_ask, call_ask_iv, strike, "
    "put_bid_iv, put_bid, put_ask, put_ask_iv, put_mark_iv, put_delta, put_reliable"
)


def run_query_command(args: argparse.Namespace) -> int:
    import duckdb

    from optionstream_pipeline.query.database import NoArchive, open_archive

    try:
        settings = load_settings(args.config)
        connection = open_archive(settings.archive.path)
        relation = build_query(connection, args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (NoArchive, duckdb.Error) as exc:
        print(f"optionstream query: {exc}", file=sys.stderr)
        return 1
    if args.parquet:
        relation.write_parquet(args.parquet)
        print(f"wrote {args.parquet}", file=sys.stderr)
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(relation.columns)
        writer.writerows(relation.fetchall())
    else:
        relation.show(max_rows=args.rows, max_width=200)
    return 0


def build_query(connection: duckdb.DuckDBPyConnection, args: argparse.Namespace) -> duckdb.DuckDBPyRelation:
    from optionstream_pipeline.query.database import check_time, check_window

    if args.query == "book":
        check_time(connection, args.at)
        return connection.sql(
            "SELECT side, level, price, amount, as_of, reliable, why FROM book_at($1, $2, depth := $3)",
            params=[args.instrument, args.at, args.depth],
        )
    if args.query == "chain":
        check_time(connection, args.at)
        chain = CHAIN_COLUMNS if not (args.csv or args.parquet) else "*"
        return connection.sql(f"SELECT {chain} FROM chain_at($1, $2)", params=[args.expiry, args.at])
    if args.query == "smile":
        check_time(connection, args.at)
        return connection.sql("SELECT * FROM smile_at($1, $2)", params=[args.expiry, args.at])
    if args.query == "top":
        check_window(connection, args.start, args.stop)
        return connection.sql(
            "SELECT * EXCLUDE (symbol) FROM top_of_book($1, $2, $3, every_ms := $4)",
            params=[args.instrument, args.start, args.stop, args.every],
        )
    if args.query == "quality":
        check_window(connection, args.start, args.stop)
        return connection.sql(
            "SELECT * FROM unreliable_intervals($1, $2, instrument := $3)",
            params=[args.start, args.stop, args.instrument],
        )
    if args.query == "updates":
        check_window(connection, args.start, args.stop)
        return connection.sql(
            "SELECT book_time, timestamp, record_type, side, price, amount, action, change_id, reason "
            "FROM updates_between($1, $2, $3)",
            params=[args.instrument, args.start, args.stop],
        )
    return connection.sql(args.statement)
