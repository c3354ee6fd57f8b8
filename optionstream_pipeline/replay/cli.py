"""``optionstream replay``: the archive served as Deribit's WebSocket API, on a replay clock.

    optionstream replay --from 2025-06-01T12:00Z --to 2025-06-01T13:00Z            # real time
    optionstream replay --from 2025-06-01T12:00Z --to 2025-06-01T13:00Z --speed 10
    optionstream replay --from 2025-06-01T12:00Z --to 2025-06-01T13:00Z --as-fast-as-possible

A Deribit client connects to ws://HOST:PORT/ws/api/v2 and subscribes to ``book.{instrument}.100ms``
(or ``.raw``) and ``ticker.{instrument}.100ms`` as it would on Deribit (docs/queries.md, "Replay").
The server is the simulator's (:class:`~optionstream_pipeline.simulator.server.DeribitSimulator`)
with the archive as its data source; it runs until SIGINT/SIGTERM, also after the window is played out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC
from typing import TYPE_CHECKING

from optionstream_pipeline.config import ConfigError, add_config_argument, load_settings
from optionstream_pipeline.query.cli import moment
from optionstream_pipeline.simulator.server import DeribitSimulator, serve_until_signalled
from optionstream_pipeline.simulator.settings import SimulatorSettings

if TYPE_CHECKING:
    from optionstream_pipeline.replay.source import ArchiveSource

log = logging.getLogger(__name__)
DEFAULT_PORT = 8001  # tardis-machine's WebSocket port


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="serve the archive as Deribit's WebSocket API (book and ticker subscriptions, on a replay clock)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    parser.add_argument("--from", dest="start", required=True, type=moment, help="UTC time, e.g. 2025-06-01T12:00Z")
    parser.add_argument("--to", dest="stop", required=True, type=moment)
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=speed, default=1.0, help="exchange time per real time (default 1)")
    pace.add_argument("--as-fast-as-possible", action="store_true", help="no waiting: as fast as clients read")
    parser.add_argument(
        "--start-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="the clock starts S seconds after the first subscription; subscriptions until then get the books "
        "at --from (default %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free one (default %(default)s)")
    parser.set_defaults(func=run_replay_command)


def speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a speed: expected a number above 0, e.g. 1, 10 or 0.5")
    return value


def run_replay_command(args: argparse.Namespace) -> int:
    import duckdb

    from optionstream_pipeline.query.database import NoArchive
    from optionstream_pipeline.replay.loading import open_replay

    start, stop = args.start.astimezone(UTC), args.stop.astimezone(UTC)
    try:
        settings = load_settings(args.config)
        pace = None if args.as_fast_as_possible else args.speed
        source = open_replay(settings.archive.path, start, stop, pace, max(0.0, args.start_delay))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (NoArchive, duckdb.Error) as exc:
        print(f"optionstream replay: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(serve(source, args.host, args.port))


async def serve(source: ArchiveSource, host: str, port: int) -> int:
    """The simulator's server around ``source`` until SIGINT/SIGTERM (no fault-injection methods)."""
    simulator = DeribitSimulator(SimulatorSettings(host=host, port=port, control_methods=False), source=source)
    return await serve_until_signalled(simulator, lambda url: log.info("replay listening on %s", url))
