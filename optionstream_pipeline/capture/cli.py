"""``optionstream capture``: run the capture engine from the configuration until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from optionstream_pipeline.capture.engine import CaptureEngine
from optionstream_pipeline.capture.stats import rates, status_line
from optionstream_pipeline.capture.universe import build_engine
from optionstream_pipeline.config import ConfigError, Settings, add_config_argument, load_settings
from optionstream_pipeline.kafka.admin import BrokerUnreachableError

log = logging.getLogger(__name__)

EXIT_UNDELIVERED = 3


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "capture",
        help="capture Deribit option books into Kafka until interrupted",
        description="Capture the configured Deribit option books into Kafka. Stops cleanly on SIGINT or "
        "SIGTERM: closes the connections, flushes Kafka within kafka.flush_timeout_s, exits 0 "
        f"(or {EXIT_UNDELIVERED} if records were still undelivered at the bound).",
    )
    add_config_argument(parser)
    parser.add_argument("--url", help="override deribit.websocket_url (e.g. the simulator's ws://127.0.0.1:8765/...)")
    parser.add_argument("--brokers", help="override kafka.brokers, comma-separated HOST:PORT")
    parser.add_argument("--instruments", help="override deribit.instruments: comma-separated names, or 'auto'")
    parser.add_argument("--no-status", action="store_true", help="no live status line on the terminal")
    parser.set_defaults(func=run_capture_command)


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    overrides: dict[str, object] = {}
    if args.url:
        overrides["deribit.websocket_url"] = args.url
    if args.brokers:
        overrides["kafka.brokers"] = [b.strip() for b in args.brokers.split(",") if b.strip()]
    if args.instruments:
        value = args.instruments.strip()
        overrides["deribit.instruments"] = "auto" if value == "auto" else [n.strip() for n in value.split(",")]
    return settings.replace(**overrides) if overrides else settings


def run_capture_command(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    show_status = not args.no_status and sys.stderr.isatty()
    try:
        return asyncio.run(run_capture(settings, show_status))
    except BrokerUnreachableError as exc:
        print(f"optionstream capture: {exc}", file=sys.stderr)
        return 1


async def run_capture(settings: Settings, show_status: bool = False) -> int:
    engine = build_engine(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, engine.request_stop)
    status = asyncio.create_task(_show_status(engine)) if show_status else None
    try:
        await engine.run()
    finally:
        if status is not None:
            status.cancel()
            print(file=sys.stderr)
    final = engine.stats()
    log.info(
        "capture %s stopped: %d in, %d delivered, %d failed, %d gaps, %d reconnects",
        final.capture_id,
        final.messages_in,
        final.delivered,
        final.delivery_failed,
        final.gaps,
        final.reconnects,
    )
    return EXIT_UNDELIVERED if engine.final_undelivered else 0


async def _show_status(engine: CaptureEngine) -> None:
    while not engine.ready.is_set():
        await asyncio.sleep(0.1)
    before = engine.stats()
    while True:
        await asyncio.sleep(1.0)
        after = engine.stats()
        print(f"\r\x1b[2K{status_line(after, rates(before, after))}", end="", file=sys.stderr, flush=True)
        before = after
