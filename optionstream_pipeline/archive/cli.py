"""``optionstream archive``: the topic's partitions into Parquet, once or ``--follow``, with progress."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from optionstream_pipeline.config import ConfigError, add_config_argument, load_settings
from optionstream_pipeline.kafka.admin import BrokerUnreachableError

if TYPE_CHECKING:
    from optionstream_pipeline.archive.partition import PartitionReport

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "archive",
        help="archive the topic's partitions to Parquet (exactly once), once or --follow",
        description="Read each partition of kafka.topic from where the archive ended to its end and write "
        "the rows to archive.path. Safe to stop and rerun at any moment: the archive holds every record "
        "exactly once.",
    )
    add_config_argument(parser)
    parser.add_argument("--partitions", help="comma-separated partitions (default: all of the topic)")
    parser.add_argument("--follow", action="store_true", help="keep archiving until SIGINT or SIGTERM")
    parser.set_defaults(func=run_archive_command)


def run_archive_command(args: argparse.Namespace) -> int:
    from optionstream_pipeline.archive.run import archive_topic, follow
    from optionstream_pipeline.archive.store import ArchiveError

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    partitions = [int(p) for p in args.partitions.split(",")] if args.partitions else None
    meter = ProgressLine(sys.stderr.isatty())
    try:
        if args.follow:
            stop = threading.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            follow(settings, stop, partitions, meter)
        else:
            for report in archive_topic(settings, partitions, meter):
                meter.done(report)
    except (BrokerUnreachableError, LookupError, ArchiveError, TimeoutError) as exc:
        meter.clear()
        print(f"optionstream archive: {exc}", file=sys.stderr)
        return 1
    meter.clear()
    return 0


class ProgressLine:
    """Records read, rows per second and records to go, per partition, on one terminal line."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self._began: dict[tuple[str, int], tuple[float, int]] = {}

    def __call__(self, report: PartitionReport) -> None:
        began, _ = self._began.setdefault((report.topic, report.partition), (time.monotonic(), 0))
        if self.live:
            elapsed = max(1e-6, time.monotonic() - began)
            print(f"\r\x1b[2K{describe(report, elapsed)}", end="", file=sys.stderr, flush=True)

    def done(self, report: PartitionReport) -> None:
        self.clear()
        self._began.pop((report.topic, report.partition), None)
        log.info("%s", describe(report, report.duration_s))

    def clear(self) -> None:
        if self.live:
            print("\r\x1b[2K", end="", file=sys.stderr, flush=True)


def describe(report: PartitionReport, elapsed_s: float) -> str:
    rate = report.rows / elapsed_s if elapsed_s > 0 else 0.0
    lag = report.lag
    left = f"{lag:,} records to go" if lag is not None else "end not known yet"
    extra = f"; {report.plan}" if report.new_incarnation or report.hole else ""
    return (
        f"{report.topic} partition {report.partition} (incarnation {report.incarnation}): {report.records:,} records, "
        f"{report.rows:,} rows in {len(report.files)} files ({rate:,.0f} rows/s), {left}{extra}"
    )
