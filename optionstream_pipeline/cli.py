"""The ``optionstream`` command: one sub-command per capability.

Each capability module owns its own sub-command through an ``add_parser(subparsers)`` function that
registers the parser and sets ``func(args) -> int``; this file only collects them.

Every command builds the whole parser, so building it stays light: a sub-command's module imports at
its top what its parser needs, and imports the heavy libraries only its run needs (pyarrow and DuckDB
for the archive, uvicorn for the web view), and the modules that bring them in, inside the function
that runs it. ``optionstream capture --help`` and the capture process load none of them, nor Dagster
(``test_layering``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from optionstream_pipeline import __version__


def build_parser() -> argparse.ArgumentParser:
    from optionstream_pipeline import config, demo
    from optionstream_pipeline.archive import cli as archive_cli
    from optionstream_pipeline.capture import cli as capture_cli
    from optionstream_pipeline.consume import cli as consume_cli
    from optionstream_pipeline.consume.web import cli as ui_cli
    from optionstream_pipeline.kafka import broker
    from optionstream_pipeline.query import cli as query_cli
    from optionstream_pipeline.replay import cli as replay_cli
    from optionstream_pipeline.simulator import cli as simulator_cli

    parser = argparse.ArgumentParser(
        prog="optionstream",
        description="Capture Deribit BTC option order books to Kafka, archive to Parquet, query in DuckDB.",
    )
    parser.add_argument("--version", action="version", version=f"optionstream {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [demo, capture_cli, consume_cli, ui_cli, archive_cli, query_cli, replay_cli, simulator_cli]
    modules += [broker, config]
    for module in modules:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
