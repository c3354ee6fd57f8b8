"""``optionstream demo``: the whole product offline, in one command, with the Dagster UI.

Starts what a real deployment has, in miniature:

- Kafka: the configured brokers if one answers, else the embedded broker (Tansu, in memory);
- Deribit: the simulator, in this process, with a few hundred instruments and an accelerated
  lifecycle (an expiry rolls off and a new one is listed every ``--lifecycle-interval`` seconds), so
  discovery has something to discover;
- Dagster: ``dagster dev -w workspace.yaml`` with ``DAGSTER_HOME`` under the data directory, the demo
  instance config (one capture run at a time, run monitoring), and ``OPTIONSTREAM_*`` overrides
  pointing the code location at the two above (``OPTIONSTREAM_DEPLOYMENT=demo``).

The capture_supervisor sensor then launches discovery and the capture run by itself. Ctrl-C stops
``dagster dev`` (its runs included), then the simulator and the broker.

The demo owns what it starts: before starting anything it checks that the UI port is free, that no
other demo uses the data directory (a lock file) and that no live Dagster daemon holds its instance,
and says which is not so; and a :class:`~optionstream_pipeline.lifeline.Lifeline` stops ``dagster
dev``'s whole process tree and the broker if the demo dies without Ctrl-C (SIGKILL, a closed
terminal).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from optionstream_pipeline import pidlock
from optionstream_pipeline.config import ConfigError, Settings, add_config_argument, load_settings
from optionstream_pipeline.kafka.broker import EmbeddedBroker, broker_reachable
from optionstream_pipeline.lifeline import Lifeline, stop_groups

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
INSTANCE_TEMPLATE = REPO_ROOT / "config" / "dagster.yaml"
DEFAULT_DATA_DIR = Path("data")
DEFAULT_UI_PORT = 3000
DEFAULT_VIEW_PORT = 8050
BROKER_PROBE_S = 2.0
DAGSTER_STOP_S = 30.0
CANCEL_WAIT_S = 30.0
ORPHAN_STOP_S = 20.0
LOCK_FILE = "demo.lock"
DAEMON_ALIVE_S = 60.0  # Dagster's daemon beats every 30 s at most
LIVE_CAPTURE_RUNS = """{ runsOrError(filter: {pipelineName: "deribit_capture",
  statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) { ... on Runs { results { runId } } } }"""
TERMINATE_RUNS = """mutation($runIds: [String!]!) { terminateRuns(runIds: $runIds) { __typename } }"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="offline demo: Kafka, the Deribit simulator and the Dagster UI, in one command",
        description="Run capture, discovery and health checks under Dagster against the Deribit simulator and "
        "a Kafka broker (the configured one if reachable, else an embedded one). Open the UI, watch the "
        "capture run and its observations; Ctrl-C stops everything.",
    )
    add_config_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="Dagster UI host (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_UI_PORT, help="Dagster UI port (default %(default)s)")
    parser.add_argument("--view-port", type=int, default=DEFAULT_VIEW_PORT, help="live view port (default %(default)s)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="demo data (default ./%(default)s)")
    parser.add_argument("--instruments", type=int, default=300, help="simulated options (default %(default)s)")
    parser.add_argument("--events-per-second", type=float, default=300.0, help="simulated book events/s")
    parser.add_argument(
        "--lifecycle-interval",
        type=float,
        default=300.0,
        metavar="S",
        help="every S seconds expire the nearest expiry and list a new one; 0: real calendar (default %(default)s)",
    )
    parser.add_argument("--embedded-kafka", action="store_true", help="use the embedded broker even if one answers")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    for required in (WORKSPACE, INSTANCE_TEMPLATE):
        if not required.exists():
            print(f"optionstream demo: {required} is missing; run the demo from a source checkout", file=sys.stderr)
            return 2
    data_dir = Path(args.data_dir).resolve()
    try:
        check_port_free(args.host, args.port)
        check_port_free(args.host, args.view_port)
        lock = hold_data_dir(data_dir)
        check_no_live_daemon(data_dir / "dagster_home")
    except DemoRefused as exc:
        print(f"optionstream demo: {exc}", file=sys.stderr)
        return 2
    # Ctrl-C and SIGTERM both mean "stop everything cleanly". SIGINT gets Python's handler even if the
    # demo was started with it ignored (a background job), so dagster dev does not inherit "ignored".
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupt),
    }
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(lock.close)
            lifeline = stack.enter_context(Lifeline())  # closed last: after every child stopped
            bootstrap = start_kafka(settings, args.embedded_kafka, stack, lifeline)
            simulator_url = start_simulator(args, stack)
            view_url = start_live_view(settings, bootstrap, data_dir, args, stack)
            env = demo_environment(settings, args.config, data_dir, bootstrap, simulator_url)
            _print_banner(args, data_dir, bootstrap, simulator_url, view_url)
            return run_dagster_dev(env, args.host, args.port, lifeline)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class DemoRefused(Exception):
    """The demo cannot start here; the message says why and what to do."""


def check_port_free(host: str, port: int) -> None:
    """The UI's port must be free now, or ``dagster dev`` would fail after everything else started."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((_connect_host(host), port))
        except OSError as exc:
            raise DemoRefused(
                f"port {port} on {host} is taken ({exc.strerror}): is another demo or Dagster UI running? "
                "Stop it, or choose another port with --port"
            ) from None


def hold_data_dir(data_dir: Path) -> IO[str]:
    """An exclusive lock on the data directory for the demo's lifetime (the kernel drops it on exit)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        handle = pidlock.hold(data_dir / LOCK_FILE)
    except pidlock.LockHeld as held:
        raise DemoRefused(
            f"another demo (pid {held.holder}) is using the data directory {data_dir}: stop it, or pass --data-dir"
        ) from None
    return handle


def check_no_live_daemon(dagster_home: Path, now: float | None = None) -> None:
    """No Dagster daemon may be beating on this instance: two would run every sensor twice.

    Read from the instance's SQLite run storage (``history/runs.db``, table ``daemon_heartbeats``)
    without importing Dagster; an instance without that file has no daemon.
    """
    database = dagster_home / "history" / "runs.db"
    if not database.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2)) as db:
            rows = db.execute("SELECT daemon_type, timestamp FROM daemon_heartbeats").fetchall()
    except sqlite3.Error:
        return  # not the storage this check knows: nothing to say
    now = time.time() if now is None else now
    for daemon, stamp in rows:
        beat = datetime.fromisoformat(str(stamp)).replace(tzinfo=UTC).timestamp()
        if now - beat < DAEMON_ALIVE_S:
            raise DemoRefused(
                f"a Dagster daemon ({daemon}) holds the instance in {dagster_home}: its last heartbeat was "
                f"{now - beat:.0f} s ago. Stop that dagster dev (or daemon) first, or pass another --data-dir"
            )


def start_kafka(settings: Settings, force_embedded: bool, stack: contextlib.ExitStack, lifeline: Lifeline) -> str:
    """The configured brokers if they answer, else an embedded broker stopped with the demo."""
    configured = ",".join(settings.kafka.brokers)
    if not force_embedded and broker_reachable(configured, BROKER_PROBE_S):
        print(f"Kafka: using the configured broker {configured}")
        return configured
    broker = stack.enter_context(EmbeddedBroker())
    lifeline.watch(broker.pid)
    print(f"Kafka: no broker at {configured}; started the embedded broker at {broker.bootstrap} (in memory)")
    return broker.bootstrap


def start_simulator(args: argparse.Namespace, stack: contextlib.ExitStack) -> str:
    """The Deribit simulator on a free port in a background thread; returns its WebSocket URL."""
    from optionstream_pipeline.simulator.server import SimulatorThread
    from optionstream_pipeline.simulator.settings import SimulatorSettings

    simulator = SimulatorThread(
        SimulatorSettings(
            max_instruments=args.instruments,
            events_per_second=args.events_per_second,
            lifecycle_interval_s=args.lifecycle_interval or None,
        )
    )
    stack.enter_context(simulator)
    return simulator.url


def start_live_view(
    settings: Settings, bootstrap: str, data_dir: Path, args: argparse.Namespace, stack: contextlib.ExitStack
) -> str:
    """The live web view of the books, in this process, on the demo's broker and archive; its URL.

    It waits for the topic, which the capture run creates once Dagster launched it, and reads it
    from its earliest record: the embedded broker starts empty, so an archive left by an earlier
    demo holds another incarnation of the topic, which the live view must not start from."""
    from optionstream_pipeline.consume.web.cli import ServerThread, live_books

    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"brokers": [bootstrap]}),
            "archive": settings.archive.model_copy(update={"path": str(data_dir / "archive")}),
        }
    )
    server = stack.enter_context(ServerThread(live_books(settings, "earliest"), args.host, args.view_port))
    return server.url


def prepare_dagster_home(data_dir: Path) -> Path:
    """``<data>/dagster_home`` with the demo instance config (refreshed from config/dagster.yaml)."""
    home = data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
    return home


def demo_environment(
    settings: Settings, config: str | None, data_dir: Path, bootstrap: str, simulator_url: str
) -> dict[str, str]:
    """The environment of ``dagster dev``: the demo deployment pointed at this broker and simulator."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPTIONSTREAM_")}
    config_path = Path(config or os.environ.get("OPTIONSTREAM_CONFIG") or REPO_ROOT / "config" / "config.yaml")
    env.update(
        {
            "DAGSTER_HOME": str(prepare_dagster_home(data_dir)),
            "OPTIONSTREAM_CONFIG": str(config_path.resolve()),
            "OPTIONSTREAM_DEPLOYMENT": "demo",
            "OPTIONSTREAM_DERIBIT__WEBSOCKET_URL": simulator_url,
            "OPTIONSTREAM_DERIBIT__BOOK_INTERVAL": "100ms",
            "OPTIONSTREAM_KAFKA__BROKERS": f"[{bootstrap}]",
            "OPTIONSTREAM_DISCOVERY__UNIVERSE_PATH": str(data_dir / "universe"),
            "OPTIONSTREAM_ARCHIVE__PATH": str(data_dir / "archive"),
        }
    )
    # Keep the user's own OPTIONSTREAM_* tweaks (e.g. a shorter discovery cron), except the ones set above.
    env.update({k: v for k, v in os.environ.items() if k.startswith("OPTIONSTREAM_") and k not in env})
    return env


def dagster_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "dagster", "dev", "-w", str(WORKSPACE), "-h", host, "-p", str(port)]


def run_dagster_dev(env: dict[str, str], host: str, port: int, lifeline: Lifeline) -> int:
    """Run ``dagster dev`` in its own session until it exits or the demo is interrupted."""
    process = subprocess.Popen(dagster_command(host, port), cwd=REPO_ROOT, env=env, start_new_session=True)
    lifeline.watch(process.pid)
    try:
        return process.wait()
    except KeyboardInterrupt:
        print("\nstopping: cancelling the capture run (flushes Kafka), then dagster dev ...", flush=True)
        cancel_capture_runs(f"http://{_connect_host(host)}:{port}/graphql", CANCEL_WAIT_S)
        return 0
    finally:
        stop_process_group(process, DAGSTER_STOP_S)


def cancel_capture_runs(graphql_url: str, timeout_s: float) -> None:
    """Cancel live capture runs through the UI's API and wait until they ended (best effort).

    ``dagster dev`` leaves its runs behind when it stops; a cancel lets the capture close its
    connections and flush Kafka, and leaves the run CANCELED instead of a stale STARTED one.
    """
    deadline = time.monotonic() + timeout_s
    try:
        pending = set(_live_capture_runs(graphql_url))
        if pending:
            _graphql(graphql_url, TERMINATE_RUNS, {"runIds": sorted(pending)})
        while pending and time.monotonic() < deadline:
            time.sleep(0.5)
            pending &= set(_live_capture_runs(graphql_url))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"could not cancel the capture run cleanly ({exc}); stopping anyway", file=sys.stderr)


def _live_capture_runs(graphql_url: str) -> list[str]:
    data = _graphql(graphql_url, LIVE_CAPTURE_RUNS, {})
    return [run["runId"] for run in data["runsOrError"]["results"]]


def _graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def stop_process_group(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGINT to ``dagster dev`` (its own clean shutdown), then to what is left of its process group
    (a run worker it left behind stops cleanly on SIGINT), then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)
    stop_groups([process.pid], ORPHAN_STOP_S)
    if process.poll() is None:
        process.wait(5)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_banner(args: argparse.Namespace, data_dir: Path, bootstrap: str, simulator_url: str, view_url: str) -> None:
    print(
        f"Deribit simulator: {simulator_url} ({args.instruments} options, "
        f"lifecycle every {args.lifecycle_interval:g} s)\n"
        f"Data: {data_dir}\n"
        f"Dagster UI: http://{args.host}:{args.port} (starting; the capture run appears within about 30 s)\n"
        f"Live view of the books: {view_url} (the books appear once the capture run writes)\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
