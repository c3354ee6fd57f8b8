"""``optionstream ui``: the live web view of the books (a ladder per instrument, the chain per expiry).

    optionstream ui                       # http://127.0.0.1:8050/, the books as they are now
    optionstream ui --expiry 27JUN25      # only that expiry's books
    optionstream ui --host 0.0.0.0        # reachable from other machines (no authentication!)

By default the books start from the archive's books now and go on live (every book complete at
once); without an archive, from the earliest record the topic holds. ``--latest`` starts from new
records only (each book then waits for its next snapshot).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException

from optionstream_pipeline.config import ConfigError, Settings, add_config_argument, load_settings
from optionstream_pipeline.consume.cli import add_selection_arguments, add_start_arguments, selection_of
from optionstream_pipeline.consume.consumer import BookConsumer, Start
from optionstream_pipeline.consume.history import ArchiveMismatch
from optionstream_pipeline.consume.selection import Selection
from optionstream_pipeline.deribit.instruments import InstrumentNameError

if TYPE_CHECKING:
    from optionstream_pipeline.consume.web.server import LiveBooks

DEFAULT_PORT = 8050
START_TIMEOUT_S = 15.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="the live web view of the books: a ladder per instrument, the chain per expiry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    add_selection_arguments(parser)
    add_start_arguments(parser).add_argument("--latest", action="store_true", help="from new records only")
    parser.set_defaults(func=run_ui)


def run_ui(args: argparse.Namespace) -> int:
    import uvicorn

    from optionstream_pipeline.consume.web.server import create_app
    from optionstream_pipeline.query.database import NoArchive

    try:
        settings = load_settings(args.config)
        selection = selection_of(args)
    except (ConfigError, ValueError, InstrumentNameError) as exc:
        print(f"optionstream ui: {exc}", file=sys.stderr)
        return 2
    start: Start = args.start or (
        "earliest" if args.from_beginning else "latest" if args.latest else now_or_earliest(settings)
    )
    try:
        live = live_books(settings, start, selection)
    except (NoArchive, ArchiveMismatch, ValueError) as exc:
        print(f"optionstream ui: {exc}", file=sys.stderr)
        return 1
    print(f"OptionStream live view: http://{args.host}:{args.port}/  (topic {settings.kafka.topic}; Ctrl-C stops)")
    if live.error:
        print(f"  {live.error}: the page says so until it is there")
    uvicorn.run(create_app(live), host=args.host, port=args.port, log_level="warning", ws="websockets-sansio")
    return 0


def start_of(args: argparse.Namespace, settings: Settings) -> Start:
    if args.start:
        return args.start
    if args.from_beginning:
        return "earliest"
    return "latest" if args.latest else now_or_earliest(settings)


def now_or_earliest(settings: Settings) -> Start:
    """Now, from the archive's books, when there is an archive; else the topic's earliest record."""
    from optionstream_pipeline.query.database import has_archive

    return datetime.now(UTC) if has_archive(settings.archive.path) else "earliest"


def live_books(settings: Settings, start: Start, selection: Selection | None = None) -> LiveBooks:
    """The live view's books, their consumer opened now if it can be; a topic or broker not there yet
    is waited for (the page says so). A start the archive cannot give raises at once."""
    from optionstream_pipeline.consume.web.server import LiveBooks

    def open_consumer() -> BookConsumer:
        return BookConsumer.from_settings(settings, start, selection)

    live = LiveBooks(open_consumer, settings.kafka.topic)
    try:
        live.consumer = open_consumer()
    except KafkaException as exc:
        live.error = f"waiting for the topic {settings.kafka.topic} at {','.join(settings.kafka.brokers)}: {exc}"
    return live


class ServerThread:
    """The live view served from a thread (the demo's, the tests'): ``with ServerThread(...) as s``."""

    def __init__(self, live: LiveBooks, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        from optionstream_pipeline.consume.web.server import create_app

        config = uvicorn.Config(create_app(live), host=host, port=port, log_level="warning", ws="websockets-sansio")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="live-view", daemon=True)

    @property
    def url(self) -> str:
        [server] = self.server.servers
        host, port = server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        pause, deadline = threading.Event(), time.monotonic() + START_TIMEOUT_S
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            pause.wait(0.02)
        if not self.server.started:
            raise RuntimeError("the live view did not start (is the port taken?)")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self._thread.join(15)
