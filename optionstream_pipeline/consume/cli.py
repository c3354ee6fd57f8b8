"""``optionstream consume``: the live books on a terminal, or the records as JSON lines.

    optionstream consume                                  # every book, top of book, live
    optionstream consume --expiry 27JUN25 --type call     # one expiry's calls
    optionstream consume --instrument BTC-27JUN25-100000-C --json | jq .
    optionstream consume --from 2025-06-01T12:00:00Z      # from the archive's books then, on to live

The table shows one line per book, by expiry and strike: best bid and ask with sizes, mid, spread,
updates per second, the age of the last update, and why a book is not reliable (waiting for its
first snapshot, a gap, a disconnect, its capture session ended). Ctrl-C stops.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TextIO

import msgspec
from confluent_kafka import KafkaException
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from optionstream_pipeline.config import ConfigError, add_config_argument, load_settings
from optionstream_pipeline.consume.consumer import BookConsumer, Start
from optionstream_pipeline.consume.history import ArchiveMismatch
from optionstream_pipeline.consume.selection import Selection
from optionstream_pipeline.consume.view import Activity, TopOfBook, chain_order, top_of_book
from optionstream_pipeline.deribit.instruments import InstrumentNameError
from optionstream_pipeline.query.cli import moment

REFRESH_S = 0.5


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "consume",
        help="the live books on a terminal (top of book per instrument), or the records as JSON lines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    add_selection_arguments(parser)
    add_start_arguments(parser)
    parser.add_argument("--json", action="store_true", help="the records as JSON lines on standard output")
    parser.add_argument("--group", help="commit positions to this consumer group (to watch its lag in Kafka UI)")
    parser.set_defaults(func=run_consume)


def add_start_arguments(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """``--from-beginning`` or ``--from TIME`` (the group, for a command to add its own start to)."""
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="from the earliest record the topic holds")
    start.add_argument(
        "--from", dest="start", metavar="TIME", type=moment, help="from a past UTC time (needs the archive)"
    )
    return start


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instrument", action="append", help="an option name (repeatable)")
    parser.add_argument("--expiry", action="append", help="27JUN25 or 2025-06-27 (repeatable)")
    parser.add_argument("--strike", action="append", help="a strike, e.g. 100000 (repeatable)")
    parser.add_argument("--type", dest="kind", action="append", help="call or put")


def selection_of(args: argparse.Namespace) -> Selection:
    return Selection.of(args.instrument, args.expiry, args.strike, args.kind)


def run_consume(args: argparse.Namespace) -> int:
    from optionstream_pipeline.query.database import NoArchive

    try:
        settings = load_settings(args.config)
        selection = selection_of(args)
    except (ConfigError, ValueError, InstrumentNameError) as exc:
        print(f"optionstream consume: {exc}", file=sys.stderr)
        return 2
    start: Start = args.start or ("earliest" if args.from_beginning else "latest")
    try:
        consumer = BookConsumer.from_settings(settings, start, selection, group_id=args.group)
    except (NoArchive, ArchiveMismatch, ValueError) as exc:
        print(f"optionstream consume: {exc}", file=sys.stderr)
        return 1
    except KafkaException as exc:  # the broker unreachable, or no such topic
        where = ",".join(settings.kafka.brokers)
        print(f"optionstream consume: cannot read {settings.kafka.topic} at {where}: {exc}", file=sys.stderr)
        return 1
    with consumer, contextlib.suppress(KeyboardInterrupt):
        if args.json:
            write_json_lines(consumer, sys.stdout)
        else:
            show_table(consumer, Console(), since=args.start)
    return 0


def write_json_lines(consumer: BookConsumer, out: TextIO) -> None:
    encode = msgspec.json.Encoder().encode
    for update in consumer:
        out.write(encode(update.record).decode())
        out.write("\n")
        out.flush()


def show_table(consumer: BookConsumer, console: Console, since: datetime | None = None) -> None:
    activity = Activity()
    title = f"{consumer.topic}" + (f" from {since:%Y-%m-%d %H:%M:%S} UTC" if since else "")
    with Live(console=console, auto_refresh=False, screen=False) as live:
        while True:
            deadline = time.monotonic() + REFRESH_S
            while time.monotonic() < deadline:
                for update in consumer.updates(0.05):
                    activity.count(update.book.instrument)
            now = time.time()
            rates = activity.rates(time.monotonic())
            lines = [top_of_book(book, rates.get(name, 0.0), int(now * 1e6)) for name, book in consumer.books.items()]
            live.update(render_table(lines, title), refresh=True)


def render_table(lines: Iterable[TopOfBook], title: str = "") -> Table:
    """The table of ``optionstream consume``: a line per book in chain order, unreliable ones marked."""
    lines = sorted(lines, key=chain_order)
    unreliable = sum(1 for line in lines if not line.reliable)
    caption = f"{len(lines)} books, {unreliable} not reliable" if lines else "waiting for records ..."
    table = Table(title=title or None, caption=caption, expand=False)
    for header in ("instrument", "bid size", "bid", "ask", "ask size", "mid", "spread", "upd/s", "age"):
        table.add_column(header, justify="left" if header == "instrument" else "right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for line in lines:
        bid, ask = line.bid or (None, None), line.ask or (None, None)
        status = Text("ok", style="green") if line.reliable else Text(f"! {line.why}", style="bold red")
        table.add_row(
            Text(line.instrument, style="" if line.reliable else "red"),
            _number(bid[1], 1),
            _number(bid[0], 4),
            _number(ask[0], 4),
            _number(ask[1], 1),
            _number(line.mid, 5),
            _number(line.spread, 4),
            f"{line.rate:.1f}",
            _age(line.age_s),
            status,
        )
    return table


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
