"""``optionstream simulate`` (run the simulator) and ``optionstream simulate-control`` (inject faults)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
from typing import Any

import msgspec

from optionstream_pipeline.simulator.credits import RateLimits
from optionstream_pipeline.simulator.server import DeribitSimulator, serve_until_signalled
from optionstream_pipeline.simulator.settings import SimulatorSettings

DEFAULT_PORT = 8765


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    _add_simulate(subparsers)
    _add_control(subparsers)


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="run a Deribit-compatible WebSocket simulator",
        description="Serve Deribit API v2 over WebSocket at ws://HOST:PORT/ws/api/v2 (wss:// with --tls-cert) "
        "until SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (default 8765)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--instruments",
        type=int,
        default=None,
        metavar="N",
        help="scale the option universe to N instruments (default: full chain, ~700-800)",
    )
    parser.add_argument(
        "--instrument",
        action="append",
        default=[],
        metavar="NAME",
        help="serve exactly these instruments (repeatable) instead of a generated chain",
    )
    parser.add_argument("--events-per-second", type=float, default=200.0, help="book events/s, all books")
    parser.add_argument("--testnet", action="store_true", help='answer "testnet": true')
    parser.add_argument("--client-id", default=None, help="client_id accepted by public/auth")
    parser.add_argument(
        "--client-secret-env",
        default="OPTIONSTREAM_SIM_CLIENT_SECRET",
        metavar="VAR",
        help="environment variable holding the client secret (default %(default)s)",
    )
    parser.add_argument("--no-raw-auth", action="store_true", help="allow book.*.raw without public/auth")
    parser.add_argument("--min-heartbeat", type=float, default=10.0, help="minimum set_heartbeat interval (s)")
    parser.add_argument("--no-rate-limits", action="store_true", help="disable credit limits")
    parser.add_argument(
        "--lifecycle-interval",
        type=float,
        default=None,
        metavar="S",
        help="accelerated lifecycle: every S seconds expire the nearest expiry and list a new one",
    )
    parser.add_argument("--replay", default=None, metavar="WS_LOG", help="replay a recorded .ws.log instead")
    parser.add_argument("--replay-speed", default="1.0", help="replay speed factor, or 'max'")
    parser.add_argument("--load-instruments", type=int, default=None, metavar="N", help="load mode: N books")
    parser.add_argument("--load-rate", type=float, default=15_000.0, metavar="M", help="load mode: messages/s")
    parser.add_argument("--tls-cert", default=None, metavar="FILE", help="serve wss:// with this PEM certificate chain")
    parser.add_argument("--tls-key", default=None, metavar="FILE", help="the certificate's PEM private key")
    parser.set_defaults(func=run_simulate)


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    secret = os.environ.get(args.client_secret_env) if args.client_id else None
    if args.client_id and not secret:
        raise SystemExit(f"--client-id given but environment variable {args.client_secret_env} is empty")
    speed = None if str(args.replay_speed).lower() == "max" else float(args.replay_speed)
    return SimulatorSettings(
        host=args.host,
        port=args.port,
        testnet=args.testnet,
        seed=args.seed,
        max_instruments=args.instruments,
        instruments=tuple(args.instrument),
        events_per_second=args.events_per_second,
        client_id=args.client_id,
        client_secret=secret,
        raw_requires_auth=not args.no_raw_auth and not args.replay,
        min_heartbeat_interval_s=args.min_heartbeat,
        rate_limits=RateLimits(enabled=not args.no_rate_limits),
        lifecycle_interval_s=args.lifecycle_interval,
        replay_path=args.replay,
        replay_speed=speed,
        load_instruments=args.load_instruments,
        load_rate=args.load_rate,
    )


def server_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """``--tls-cert`` (and ``--tls-key``, unless the key is in the certificate file) -> a server context."""
    if args.tls_cert is None:
        if args.tls_key is not None:
            raise SystemExit("--tls-key needs --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"cannot load --tls-cert {args.tls_cert} / --tls-key {args.tls_key}: {exc}") from None
    return context


def run_simulate(args: argparse.Namespace) -> int:
    return asyncio.run(_simulate(settings_from_args(args), server_ssl_context(args)))


async def _simulate(settings: SimulatorSettings, ssl_context: ssl.SSLContext | None = None) -> int:
    return await serve_until_signalled(DeribitSimulator(settings, ssl_context), lambda url: print(url, flush=True))


# -- simulate-control -----------------------------------------------------------------------------

ACTIONS = (
    "drop",
    "stall",
    "slow",
    "skip-change",
    "corrupt-book",
    "malformed",
    "error",
    "maintenance",
    "reject-channel",
    "clear",
    "sessions",
    "expire-instrument",
    "roll-expiry",
    "create-expiry",
    "pause",
    "resume",
)


def _add_control(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate-control",
        help="inject a fault into a running simulator",
        description="Send one simulator/<action> request to a running simulator and print the result.",
    )
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--url", default=f"ws://127.0.0.1:{DEFAULT_PORT}/ws/api/v2")
    parser.add_argument("--session", type=int, default=None, help="target one session id (default: all)")
    parser.add_argument("--seconds", type=float, default=None, help="stall / maintenance duration")
    parser.add_argument("--drop-frames", action="store_true", help="stall: discard frames instead of queueing")
    parser.add_argument("--keep-connections", action="store_true", help="maintenance: do not close sessions")
    parser.add_argument("--delay", type=float, default=None, help="slow: seconds per frame")
    parser.add_argument("--instrument", default=None, help="skip-change / corrupt-book / expire-instrument")
    parser.add_argument("--interval", default=None, help="skip-change, corrupt-book: 100ms or raw (default both)")
    parser.add_argument(
        "--fields", default=None, help='corrupt-book: JSON object of data fields to replace, e.g. \'{"bids": "oops"}\''
    )
    parser.add_argument("--channel", default=None, help="reject-channel: fnmatch pattern")
    parser.add_argument("--code", type=int, default=10028, help="error: code of the id-less error")
    parser.add_argument("--expiry", default=None, help="create-expiry: YYYY-MM-DD")
    parser.set_defaults(func=run_control)


def control_params(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword params of ``simulator/<action>`` from the CLI options that apply to it."""
    action = args.action
    params: dict[str, Any] = {}
    takes_session = action in (
        "drop", "stall", "slow", "skip-change", "corrupt-book", "malformed", "error", "reject-channel", "clear"
    )  # fmt: skip
    if takes_session and args.session is not None:
        params["session"] = args.session
    if action == "stall":
        params |= {"seconds": args.seconds, "drop_frames": args.drop_frames}
    elif action == "maintenance":
        params |= {
            "seconds": args.seconds if args.seconds is not None else 10.0,
            "close_connections": not args.keep_connections,
        }
    elif action == "slow":
        params["delay_s"] = args.delay if args.delay is not None else 0.1
    elif action == "skip-change":
        params |= {"instrument": _required(args.instrument, "--instrument"), "interval": args.interval}
    elif action == "corrupt-book":
        params |= {
            "instrument": _required(args.instrument, "--instrument"),
            "interval": args.interval,
            "fields": json.loads(_required(args.fields, "--fields")),
        }
    elif action == "expire-instrument":
        params["instrument"] = _required(args.instrument, "--instrument")
    elif action == "reject-channel":
        params["pattern"] = _required(args.channel, "--channel")
    elif action == "error":
        params["code"] = args.code
    elif action == "create-expiry" and args.expiry:
        params["expiry"] = args.expiry
    return params


def _required(value: str | None, option: str) -> str:
    if not value:
        raise SystemExit(f"this action needs {option}")
    return value


def run_control(args: argparse.Namespace) -> int:
    method = "simulator/" + args.action.replace("-", "_")
    reply = asyncio.run(control_request(args.url, method, control_params(args)))
    print(json.dumps(reply.get("result", reply.get("error")), indent=2))
    return 0 if "result" in reply else 1


async def control_request(url: str, method: str, params: dict[str, Any], timeout: float = 10.0) -> dict:
    """One JSON-RPC request on a fresh connection; returns the reply with the matching id."""
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, open_timeout=timeout) as ws:
        await ws.send(msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).decode())
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(msgspec.DecodeError):
                    reply = msgspec.json.decode(await ws.recv())
                    if isinstance(reply, dict) and reply.get("id") == 1:
                        return reply


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="simulator")
    add_parser(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    sys.exit(parsed.func(parsed))
