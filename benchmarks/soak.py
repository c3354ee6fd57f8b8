"""Soak: the real ``optionstream capture`` for an hour at the full chain's rate, with a fault every minute.

    python benchmarks/soak.py [--minutes 60] [--rate 1500] [--fault-every 60] [--sample-every 10]
                              [--plot docs/soak.png] [--workdir DIR]
    python benchmarks/soak.py --replot docs/soak.csv [--plot docs/soak.png]   # redraw a run's plot

Setup, all on loopback: the embedded broker (Tansu) behind the tests' ``TcpProxy`` (the broker
advertises the proxy's port, so every Kafka connection crosses it and a broker stall is the proxy
holding the path), the simulator as its own process in market mode with the full chain
(``--instruments``, 1,100) at ``--rate`` book messages/s on the ``100ms`` channels, and the real
``optionstream capture`` as a subprocess with the shipped ``config/config.yaml`` pointed at both:
every feature on, ``instruments: auto`` (the simulator's live chain), tickers on, the metrics
endpoint on a free port.

Every ``--fault-every`` seconds one fault, in rotation: ``drop`` (one of capture's WebSocket
connections cut), ``gap`` (a change swallowed on a few books: ``skip_change``), ``broker-stall``
(the Kafka path blocked for ``--stall-seconds``), ``corrupt-book`` (a book frame that is not
Deribit's), ``malformed`` (a frame that is not JSON). Every ``--sample-every`` seconds capture's CPU
(user + system from ``/proc``, % of one core) and RSS, and its Prometheus counters, are appended to
``<plot>.csv`` (faults to ``<plot>-faults.csv``) as they are taken, so a stopped run keeps its data.

While it runs, a live check (a thread of this script) reads both topics to their end every 30 s,
from their first record on, rebuilding every book as it goes. At the end (or on Ctrl-C: the run
ends early and is still checked) capture gets SIGTERM (it writes its stop markers and flushes), the
live check reads both topics to their end with a deadline, and:

- **lost**: records accepted by capture (delivered + failed + undelivered, from its exit line)
  minus records read back (book + ticker topics) must be 0, with 0 failed deliveries and exit 0;
- **unmarked gaps**: every book is rebuilt with ``BookBuilder``; a ``change`` that does not continue
  a reliable book (no ``gap``/``disconnect`` marker and no new snapshot in between), or a change
  of a book that never had a snapshot, is an unmarked gap; there must be none;
- **RSS growth**: the median RSS of the run's last 5 minutes against that of minutes 5 to 10
  (windows of a sixth of the run, from a third in, when it is shorter) under 5 %: a trend, not the
  peak of a broker stall, which holds records in flight for seconds; the peak and the least-squares
  trend are printed beside it;
- **recovered**: after the last fault every book is subscribed again and none awaits a snapshot.

A Markdown summary is printed and the samples are drawn to ``--plot`` (PNG); the exit status is 1
if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

FAULT_KINDS = ("drop", "gap", "broker-stall", "corrupt-book", "malformed")
FAULT_COLORS = {
    "drop": "tab:red",
    "gap": "tab:orange",
    "broker-stall": "tab:purple",
    "corrupt-book": "tab:brown",
    "malformed": "tab:gray",
}
GAP_BOOKS = 3  # books a ``gap`` fault swallows one change of
QUIET_END_S = 15.0  # no fault this close to the end: the last one is recovered from before the checks
RSS_BASELINE_S = 300.0
RSS_GROWTH_LIMIT = 0.05
BOOK_TOPIC = "soak.books"
TICKER_TOPIC = "soak.tickers"
PREFIX = "optionstream_capture_"
CLK_TCK = os.sysconf("SC_CLK_TCK")

START_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 180.0
RECOVER_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 90.0  # capture's own bounds: connections 10 s, then kafka.flush_timeout_s (15 s)
CHECK_EVERY_S = 30.0  # the live check reads both topics to their end this often
CHECK_BURST_TIMEOUT_S = 120.0
READ_RATE_FLOOR = 5_000  # records/s the readback must at least manage, for its deadline

SAMPLE_COLUMNS = [
    "t_s", "time", "cpu_pct", "rss_mb", "simulator_cpu_pct", "broker_cpu_pct", "broker_rss_mb",
    "books_in_per_s", "tickers_in_per_s", "out_per_s", "delivered_per_s",
    "messages_in", "tickers_in", "messages_out", "delivered", "delivery_failed", "in_flight",
    "waiting_in_overflow", "gaps", "resyncs", "reconnects", "markers", "malformed_frames",
    "backpressure_pauses", "instruments", "instruments_subscribed", "instruments_awaiting_snapshot",
    "connections_up", "delivery_p50_ms", "delivery_p99_ms", "checked", "check_lag",
]  # fmt: skip
FAULT_COLUMNS = ["t_s", "time", "kind", "detail"]


# -- processes ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


class CpuMeter:
    """% of one core used by a process since the previous reading."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._last = (time.monotonic(), cpu_seconds(pid))

    def read(self) -> float:
        now, cpu = time.monotonic(), cpu_seconds(self.pid)
        (then, before), self._last = self._last, (now, cpu)
        return (cpu - before) / max(now - then, 1e-9) * 100


def child_env() -> dict[str, str]:
    """The environment of the children: this repository first on the path, no settings or API keys
    from the caller's environment (capture reads ``OPTIONSTREAM_*`` and ``DERIBIT_*``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIONSTREAM_", "DERIBIT_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def optionstream(args: list[str], log_path: Path, log_level: str) -> subprocess.Popen:
    """An ``optionstream`` command in its own session (a Ctrl-C at the terminal reaches only this
    script, which then stops the children in order), its output to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "optionstream_pipeline.cli", "--log-level", log_level, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=child_env(),
            start_new_session=True,
        )


def wait_for_line(process: subprocess.Popen, log_path: Path, pattern: str, timeout: float, what: str) -> re.Match:
    """The first match of ``pattern`` in the process's log, waiting at most ``timeout``."""
    from optionstream_pipeline_tests.support.waiting import wait_until

    def found() -> re.Match | None:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({process.returncode}); see {log_path}")
        return re.search(pattern, log_path.read_text(errors="replace"))

    return wait_until(found, timeout, interval=0.1, message=f"{what} (see {log_path})")


def stop_process(process: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code (None: it had to be killed)."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return None


def events_per_second(messages_per_s: float, instruments: int, flush_s: float = 0.1) -> float:
    """The simulator's book events/s that give ``messages_per_s`` on the ``100ms`` channels.

    Each 100 ms flush publishes one message per book changed since the last one; with E events/s
    spread uniformly over N books that is N (1 - exp(-E flush_s / N)) books, solved here for E.
    """
    per_flush = messages_per_s * flush_s
    if per_flush >= instruments:
        raise SystemExit(f"--rate {messages_per_s:g} is more than {instruments} books can publish every 100 ms")
    return -instruments * math.log(1 - per_flush / instruments) / flush_s


# -- capture's metrics ----------------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    """Capture's Prometheus endpoint as ``{metric: value}`` (counters without ``_total``), the delivery
    latency quantiles as ``delivery_p50_ms`` / ``delivery_p99_ms``; labelled families are left out."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        name = family.name[len(PREFIX) :]
        for sample in family.samples:
            if name == "delivery_latency_seconds":
                quantile = {"0.5": "delivery_p50_ms", "0.99": "delivery_p99_ms"}.get(sample.labels.get("quantile"))
                if quantile:
                    values[quantile] = sample.value * 1000
            elif not sample.labels and sample.name in (f"{PREFIX}{name}", f"{PREFIX}{name}_total"):
                values[name] = sample.value
    return values


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Fault:
    t_s: float
    kind: str
    detail: str


@dataclass
class Readback:
    books: int = 0
    tickers: int = 0
    by_type: Counter = field(default_factory=Counter)
    unmarked_gaps: int = 0
    changes_without_snapshot: int = 0
    examples: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Outcome:
    instruments: int = 0
    events_per_s: float = 0.0
    duration_s: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    recovered_s: float | None = None
    last_stats: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    delivered: int | None = None
    failed: int | None = None
    undelivered: int = 0
    readback: Readback = field(default_factory=Readback)
    problems: list[str] = field(default_factory=list)
    stopped_early: bool = False


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="optionstream-soak-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.plot = Path(args.plot)
        self.samples_path = self.plot.with_suffix(".csv")
        self.faults_path = self.plot.with_name(self.plot.stem + "-faults.csv")
        self.random = random.Random(args.seed)
        self.outcome = Outcome()
        self.stop_requested = threading.Event()
        self.url = ""
        self.instruments: list[str] = []
        self.t0 = 0.0

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        from optionstream_pipeline.kafka.broker import EmbeddedBroker
        from optionstream_pipeline_tests.support.tcp_proxy import TcpProxy

        args = self.args
        print(
            f"# soak: {args.minutes:g} min, {args.instruments} instruments at {args.rate:g} book msg/s, a fault every "
            f"{args.fault_every:g} s, samples every {args.sample_every:g} s, {os.cpu_count()} cores"
        )
        print(f"# work directory (logs, capture config): {self.workdir}")
        print(f"# samples: {self.samples_path}, faults: {self.faults_path}, plot: {self.plot}")
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        proxy = TcpProxy().start()
        broker = EmbeddedBroker(advertised_port=proxy.port)
        try:
            broker.start()
            proxy.target = ("127.0.0.1", broker.port)
            self.bootstrap = f"127.0.0.1:{proxy.port}"
            self.proxy, self.broker = proxy, broker
            simulator = self._start_simulator()
            try:
                capture = self._start_capture()
                self.check = LiveCheck(self.bootstrap, self.outcome.readback).start()
                try:
                    self._soak(capture, simulator)
                finally:
                    if proxy.blocked:
                        proxy.unblock()
                    self._stop_capture(capture)
                self._finish_check()
            finally:
                stop_process(simulator, 10)
        finally:
            proxy.stop()
            broker.stop()
            signal.signal(signal.SIGINT, previous)
        return self.outcome

    def _on_interrupt(self, signum: int, frame: object) -> None:
        if self.stop_requested.is_set():
            raise KeyboardInterrupt
        print("# interrupted: ending the run now and checking it (Ctrl-C again to abort)", flush=True)
        self.outcome.stopped_early = True
        self.stop_requested.set()

    def _start_simulator(self) -> subprocess.Popen:
        from optionstream_pipeline.deribit.public_api import fetch_option_names

        args = self.args
        self.outcome.events_per_s = events_per_second(args.rate, args.instruments)
        log_path = self.workdir / "simulator.log"
        simulator = optionstream(
            ["simulate", "--port", "0", "--instruments", str(args.instruments),
             "--events-per-second", f"{self.outcome.events_per_s:.1f}", "--seed", str(args.seed)],
            log_path, "WARNING",
        )  # fmt: skip
        try:
            self.url = wait_for_line(simulator, log_path, r"ws://\S+", START_TIMEOUT_S, "simulator URL").group(0)
            self.instruments = asyncio.run(fetch_option_names(self.url))
        except BaseException:
            stop_process(simulator, 10)
            raise
        self.outcome.instruments = len(self.instruments)
        print(f"# simulator {self.url}: {len(self.instruments)} instruments, "
              f"{self.outcome.events_per_s:,.0f} book events/s (pid {simulator.pid})")  # fmt: skip
        return simulator

    def _capture_config(self) -> Path:
        """The shipped configuration, pointed at the simulator and the proxy; the rest as shipped."""
        import yaml

        from optionstream_pipeline.config import load_settings, to_dict

        settings = load_settings(REPO_ROOT / "config" / "config.yaml", environ={}).replace(
            **{
                "deribit.websocket_url": self.url,
                "deribit.instruments": "auto",
                "discovery.universe_path": str(self.workdir / "no-discovery-universe"),  # -> the live chain
                "kafka.brokers": [self.bootstrap],
                "kafka.topic": BOOK_TOPIC,
                "kafka.ticker_topic": TICKER_TOPIC,
                "capture.metrics.port": 0,
            }
        )
        path = self.workdir / "capture.yaml"
        path.write_text(yaml.safe_dump(to_dict(settings), sort_keys=False))
        return path

    def _start_capture(self) -> subprocess.Popen:
        from optionstream_pipeline_tests.support.waiting import wait_until

        self.capture_log = self.workdir / "capture.log"
        config = self._capture_config()
        capture = optionstream(["capture", "--config", str(config), "--no-status"], self.capture_log, "INFO")
        try:
            match = wait_for_line(
                capture, self.capture_log, r"metrics on http://[\d.]+:(\d+)/metrics", START_TIMEOUT_S, "metrics port"
            )
            self.metrics_port = int(match.group(1))

            def subscribed() -> bool:
                if capture.poll() is not None:
                    raise RuntimeError(f"capture exited ({capture.returncode}) at start; see {self.capture_log}")
                stats = scrape(self.metrics_port)
                return stats.get("instruments", 0) >= len(self.instruments) and stats.get(
                    "instruments_subscribed"
                ) == stats.get("instruments")

            began = time.monotonic()
            wait_until(subscribed, READY_TIMEOUT_S, interval=0.5, message="every book subscribed")
        except BaseException:
            stop_process(capture, STOP_TIMEOUT_S)
            raise
        print(f"# capture pid {capture.pid}: every book subscribed in {time.monotonic() - began:.1f} s, "
              f"metrics on port {self.metrics_port}, log {self.capture_log}")  # fmt: skip
        return capture

    # -- the soak loop --------------------------------------------------------------------------

    def _soak(self, capture: subprocess.Popen, simulator: subprocess.Popen) -> None:
        args = self.args
        meters = {
            "cpu_pct": CpuMeter(capture.pid),
            "simulator_cpu_pct": CpuMeter(simulator.pid),
            "broker_cpu_pct": CpuMeter(self.broker.pid),
        }
        duration = args.minutes * 60
        self.t0 = time.monotonic()
        end = self.t0 + duration
        next_sample, next_fault = self.t0, self.t0 + args.fault_every
        unblock_at: float | None = None
        rotation = 0
        previous: dict[str, float] | None = None
        with open(self.samples_path, "w", newline="") as samples_file, open(self.faults_path, "w", newline="") as ff:
            samples = csv.DictWriter(samples_file, SAMPLE_COLUMNS, extrasaction="ignore")
            faults = csv.DictWriter(ff, FAULT_COLUMNS)
            samples.writeheader()
            faults.writeheader()
            self._fault_writer, self._faults_file = faults, ff
            print(self._progress_header())
            while not self.stop_requested.is_set():
                now = time.monotonic()
                if capture.poll() is not None:
                    self.outcome.problems.append(f"capture exited during the run ({capture.returncode})")
                    break
                if unblock_at is not None and now >= unblock_at:
                    self.proxy.unblock()
                    unblock_at = None
                    self._log_fault("broker-stall", "path to Kafka open again", counted=False)
                if now >= next_fault:
                    if now < end - QUIET_END_S:
                        kind = FAULT_KINDS[rotation % len(FAULT_KINDS)]
                        rotation += 1
                        stall = self._inject(kind)
                        if stall:
                            unblock_at = time.monotonic() + stall
                    next_fault += args.fault_every
                if now >= next_sample:
                    next_sample += args.sample_every
                    try:
                        sample = self._sample(meters, previous)
                    except OSError as exc:  # one missed sample is reported, not the end of the soak
                        self.outcome.problems.append(f"sample at {now - self.t0:.0f} s failed: {exc}")
                        print(f"# sample failed: {exc}", flush=True)
                    else:
                        previous = sample
                        self.outcome.samples.append(sample)
                        samples.writerow(sample)
                        samples_file.flush()
                        print(self._progress(sample), flush=True)
                if now >= end and unblock_at is None:
                    break
                due = min(next_sample, next_fault, unblock_at or math.inf, end if unblock_at is None else math.inf)
                self.stop_requested.wait(max(0.0, due - time.monotonic()))
            if unblock_at is not None:
                self.proxy.unblock()
                self._log_fault("broker-stall", "path to Kafka open again", counted=False)
            self.outcome.duration_s = time.monotonic() - self.t0
            if capture.poll() is None:
                self._wait_recovered()

    def _sample(self, meters: dict[str, CpuMeter], previous: dict[str, float] | None) -> dict[str, Any]:
        stats = scrape(self.metrics_port)
        self.outcome.last_stats = stats
        now = time.monotonic()
        sample: dict[str, Any] = {
            "t_s": round(now - self.t0, 1),
            "time": datetime.now(UTC).strftime("%H:%M:%S"),
            "rss_mb": round(rss_mb(meters["cpu_pct"].pid), 1),
            "broker_rss_mb": round(rss_mb(self.broker.pid), 1),
        }
        for name, meter in meters.items():
            sample[name] = round(meter.read(), 1) if previous is not None else ""
        for name in SAMPLE_COLUMNS:
            if name in stats:
                value = stats[name]
                sample[name] = round(value, 2) if name.startswith("delivery_p") else int(value)
        sample["checked"] = self.check.checked
        sample["check_lag"] = sample.get("messages_out", 0) - sample["checked"]  # handed to Kafka, not read back yet
        sample.setdefault("delivery_p50_ms", "")
        sample.setdefault("delivery_p99_ms", "")
        if previous is not None:
            elapsed = max(now - previous["_at"], 1e-9)
            for rate, counter in (("books_in_per_s", "messages_in"), ("tickers_in_per_s", "tickers_in"),
                                  ("out_per_s", "messages_out"), ("delivered_per_s", "delivered")):  # fmt: skip
                sample[rate] = round((sample.get(counter, 0) - previous.get(counter, 0)) / elapsed, 1)
        sample["_at"] = now
        return sample

    @staticmethod
    def _progress_header() -> str:
        return ("#   time  cpu%   rss MB  books/s  tick/s   out/s   p99 ms  in flight  gaps  reconn  failed  "
                "subscribed  check lag")  # fmt: skip

    def _progress(self, s: dict[str, Any]) -> str:
        def num(key: str, spec: str) -> str:
            value = s.get(key, "")
            return format(value, spec) if value != "" else "-"

        minutes, seconds = divmod(int(s["t_s"]), 60)
        return (
            f"  {minutes:3d}:{seconds:02d} {num('cpu_pct', '5.1f')} {num('rss_mb', '8.1f')} "
            f"{num('books_in_per_s', '8,.0f')} {num('tickers_in_per_s', '7,.0f')} {num('out_per_s', '7,.0f')} "
            f"{num('delivery_p99_ms', '8.1f')} {num('in_flight', '10,')} {num('gaps', '5')} "
            f"{num('reconnects', '7')} {num('delivery_failed', '7')}  "
            f"{num('instruments_subscribed', '')}/{num('instruments', '')}  {num('check_lag', '10,')}"
        )

    # -- faults ---------------------------------------------------------------------------------

    def _control(self, method: str, **params: Any) -> Any:
        from optionstream_pipeline.simulator.cli import control_request

        reply = asyncio.run(control_request(self.url, f"simulator/{method}", params))
        if "error" in reply:
            raise RuntimeError(f"simulator/{method}: {reply['error']}")
        return reply["result"]

    def _capture_session(self) -> dict[str, Any] | None:
        """One of capture's WebSocket sessions (one that follows books), at random."""
        sessions = [s for s in self._control("sessions") if not s["is_control"] and s["channels"]]
        return self.random.choice(sessions) if sessions else None

    def _inject(self, kind: str) -> float | None:
        """Inject one fault; returns the seconds after which the broker path must be unblocked."""
        try:
            if kind == "drop":
                session = self._capture_session()
                if session is None:
                    return self._log_fault(kind, "skipped: no capture session to drop")
                self._control("drop", session=session["id"])
                books = sum(1 for c in session["channels"] if c.startswith("book."))
                return self._log_fault(kind, f"WebSocket session {session['id']} cut ({books} books)")
            if kind == "gap":
                names = self.random.sample(self.instruments, GAP_BOOKS)
                for name in names:
                    self._control("skip_change", instrument=name, interval="100ms")
                return self._log_fault(kind, f"next change of {', '.join(names)} swallowed")
            if kind == "broker-stall":
                self.proxy.block()
                self._log_fault(kind, f"path to Kafka blocked for {self.args.stall_seconds:g} s")
                return self.args.stall_seconds
            if kind == "corrupt-book":
                name = self.random.choice(self.instruments)
                self._control("corrupt_book", instrument=name, interval="100ms", fields={"bids": "oops"})
                return self._log_fault(kind, f"next book frame of {name} not Deribit's (bids: 'oops')")
            if kind == "malformed":
                session = self._capture_session()
                if session is None:
                    return self._log_fault(kind, "skipped: no capture session")
                self._control("malformed", session=session["id"])
                return self._log_fault(kind, f"a frame that is not JSON on session {session['id']}")
        except (OSError, RuntimeError, TimeoutError) as exc:
            self.outcome.problems.append(f"fault {kind} could not be injected: {exc}")
            return self._log_fault(kind, f"FAILED to inject: {exc}")
        raise ValueError(kind)

    def _log_fault(self, kind: str, detail: str, counted: bool = True) -> None:
        t_s = round(time.monotonic() - self.t0, 1)
        if counted:
            self.outcome.faults.append(Fault(t_s, kind, detail))
        row = {
            "t_s": t_s,
            "time": datetime.now(UTC).strftime("%H:%M:%S"),
            "kind": kind if counted else "",
            "detail": detail,
        }
        self._fault_writer.writerow(row)
        self._faults_file.flush()
        minutes, seconds = divmod(int(t_s), 60)
        print(f"  {minutes:3d}:{seconds:02d} FAULT {kind}: {detail}", flush=True)

    # -- the end --------------------------------------------------------------------------------

    def _wait_recovered(self) -> None:
        """After the last fault: every book subscribed again, none waiting for a snapshot, Kafka caught up."""
        began = time.monotonic()
        deadline = began + RECOVER_TIMEOUT_S
        while True:
            stats = scrape(self.metrics_port)
            self.outcome.last_stats = stats
            if (
                stats.get("instruments_subscribed") == stats.get("instruments")
                and stats.get("instruments_awaiting_snapshot") == 0
                and stats.get("connections_up") == stats.get("connections")
                and stats.get("in_flight", 0) < 100_000
            ):
                self.outcome.recovered_s = time.monotonic() - began
                return
            if time.monotonic() > deadline:
                self.outcome.problems.append(
                    f"not recovered {RECOVER_TIMEOUT_S:.0f} s after the run: "
                    f"{stats.get('instruments_subscribed')}/{stats.get('instruments')} subscribed, "
                    f"{stats.get('instruments_awaiting_snapshot')} awaiting a snapshot, "
                    f"{stats.get('connections_up')}/{stats.get('connections')} connections up"
                )
                return
            time.sleep(1.0)

    def _stop_capture(self, capture: subprocess.Popen) -> None:
        outcome = self.outcome
        print("# stopping capture (SIGTERM): stop markers, flush", flush=True)
        outcome.exit_code = stop_process(capture, STOP_TIMEOUT_S)
        if outcome.exit_code is None:
            outcome.problems.append(f"capture did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM (killed)")
        elif outcome.exit_code != 0:
            outcome.problems.append(f"capture exited {outcome.exit_code}")
        text = self.capture_log.read_text(errors="replace")
        stopped = re.search(r"capture \w+ stopped: (\d+) in, (\d+) delivered, (\d+) failed, (\d+) gaps", text)
        if stopped:
            outcome.delivered, outcome.failed = int(stopped.group(2)), int(stopped.group(3))
        else:
            outcome.problems.append("capture's exit line (… stopped: N in, N delivered, …) is not in its log")
        undelivered = re.search(r"(\d+) records undelivered after the flush bound", text)
        outcome.undelivered = int(undelivered.group(1)) if undelivered else 0

    def _finish_check(self) -> None:
        """The live check reads what capture wrote last, to each topic's end."""
        outcome = self.outcome
        expected = outcome.delivered or int(outcome.last_stats.get("delivered", 0))
        left = max(0, expected - self.check.checked)
        timeout = max(120.0, left / READ_RATE_FLOOR)
        print(f"# live check: {self.check.checked:,} records checked during the run, reading the last "
              f"{left:,} to the end (deadline {timeout:.0f} s)", flush=True)  # fmt: skip
        self.check.finish(timeout)
        if outcome.readback.error:
            outcome.problems.append(f"live check failed: {outcome.readback.error}")


class LiveCheck:
    """Both topics read from their first record while the soak runs, every book rebuilt as it goes.

    Reading ten million records back after the run was far too slow on the embedded broker, and a
    reader following the topics all the time costs it a fetch after fetch that grows with what it
    holds (it took a core within 30 minutes). So a thread reads both topics to their end every
    ``CHECK_EVERY_S``, each time with a fresh reader from where the last one stopped, and fetches
    nothing in between; :meth:`finish`, once capture has stopped, reads the last records with a
    deadline. What it finds is in :attr:`readback`: the counts the loss check compares with
    capture's own, and every unmarked gap.
    """

    def __init__(self, bootstrap: str, readback: Readback) -> None:
        from optionstream_pipeline.consume.books import BookBuilder

        self.readback = readback
        self._bootstrap = bootstrap
        self._builder = BookBuilder()
        self._positions: dict[str, dict[int, int] | None] = {BOOK_TOPIC: None, TICKER_TOPIC: None}  # None: the first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="soak-live-check", daemon=True)

    @property
    def checked(self) -> int:
        return self.readback.books + self.readback.tickers

    def start(self) -> LiveCheck:
        self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self._read_to_end(CHECK_BURST_TIMEOUT_S)
            except TimeoutError as exc:  # a broker stall: what was read counts, the next round goes on
                print(f"# live check: {exc}", flush=True)
            except Exception as exc:  # an undecodable record: reported, and the check stops
                self.readback.error = f"{type(exc).__name__}: {exc}"
                return

    def finish(self, timeout_s: float) -> None:
        """Stop the rounds, then read both topics to their end (capture has stopped writing)."""
        self._stop.set()
        self._thread.join()
        began = time.monotonic()
        if self.readback.error is None:
            try:
                self._read_to_end(timeout_s)
            except Exception as exc:  # a timeout, an undecodable record: reported, the rest still printed
                self.readback.error = f"{type(exc).__name__}: {exc}"
        self.readback.seconds = time.monotonic() - began

    def _read_to_end(self, timeout_s: float) -> None:
        from optionstream_pipeline.kafka.reader import BEGINNING, TopicReader

        deadline = time.monotonic() + timeout_s
        for topic, kind, take in ((BOOK_TOPIC, "book", self._check_books), (TICKER_TOPIC, "ticker", self._count)):
            start = self._positions[topic] or BEGINNING
            with contextlib.closing(TopicReader(self._bootstrap, topic, start, records=kind)) as reader:
                try:
                    for batch in reader.batches_to_end(max(1.0, deadline - time.monotonic())):
                        take(batch)
                finally:  # from where this reader stopped, also after a timeout
                    known = {p: o for p, o in reader.positions().items() if o is not None}
                    self._positions[topic] = {p: known.get(p, BEGINNING) for p in reader.partitions}

    def _count(self, batch: list[Any]) -> None:
        self.readback.tickers += len(batch)

    def _check_books(self, batch: list[Any]) -> None:
        from optionstream_pipeline.consume.books import WAITING

        readback, builder = self.readback, self._builder
        for item in batch:
            record = item.record
            readback.by_type[record.type] += 1
            if record.type != "change":
                builder.apply(record, item.partition)
                continue
            book = builder.books.get(item.key)
            if book is None or book.why == WAITING:
                readback.changes_without_snapshot += 1
                self._example(f"{item.key}: change {record.change_id} before any snapshot")
            was_reliable = book is not None and book.reliable
            book = builder.apply(record, item.partition)
            if was_reliable and not book.reliable:
                readback.unmarked_gaps += 1
                self._example(f"{item.key} partition {item.partition} offset {item.offset}: {book.why}")
        readback.books += len(batch)

    def _example(self, text: str) -> None:
        if len(self.readback.examples) < 10:
            self.readback.examples.append(text)


# -- the report -----------------------------------------------------------------------------------


def values(samples: list[dict[str, Any]], key: str, after_s: float = -1.0) -> list[float]:
    return [float(s[key]) for s in samples if s.get(key, "") != "" and float(s["t_s"]) > after_s]


def percentile(data: list[float], fraction: float) -> float | None:
    if not data:
        return None
    ordered = sorted(data)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class RssGrowth:
    """Capture's RSS after the warm-up: where growth is measured from, the medians it compares, the peak."""

    baseline_s: float
    window_s: float
    base_mb: float | None = None  # median RSS over [baseline_s, baseline_s + window_s)
    end_mb: float | None = None  # median RSS over the run's last window_s
    peak_mb: float | None = None  # highest sample after baseline_s (a broker stall buffers records)
    slope_mb_per_h: float | None = None  # least-squares trend of every sample after baseline_s

    @property
    def growth(self) -> float:
        return math.nan if self.base_mb is None or self.end_mb is None else (self.end_mb - self.base_mb) / self.base_mb


def rss_growth(samples: list[dict[str, Any]], duration_s: float) -> RssGrowth:
    """Growth as a trend, not a peak: the median of the last window against the median of the first
    one after the warm-up (5 minutes in, or a third of a shorter run), each 5 minutes long (a sixth
    of a shorter run). RSS rises for the seconds a broker stall holds records in flight and falls
    back once they are delivered: the peak is reported beside, not taken for growth."""
    baseline_s = min(RSS_BASELINE_S, duration_s / 3)
    window_s = min(RSS_BASELINE_S, duration_s / 6)
    points = [(float(s["t_s"]), float(s["rss_mb"])) for s in samples if s.get("rss_mb", "") != ""]
    after = [(t, mb) for t, mb in points if t >= baseline_s]
    result = RssGrowth(baseline_s, window_s)
    if len(after) < 2:
        return result
    first = [mb for t, mb in after if t < baseline_s + window_s]
    last = [mb for t, mb in after if t > after[-1][0] - window_s]
    result.base_mb, result.end_mb = percentile(first, 0.5), percentile(last, 0.5)
    result.peak_mb = max(mb for _, mb in after)
    times, sizes = zip(*after, strict=True)
    result.slope_mb_per_h = statistics.linear_regression(times, sizes).slope * 3600
    return result


def fmt(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:{spec}}{unit}"


def report(outcome: Outcome, args: argparse.Namespace) -> int:
    """Print the Markdown summary; returns the exit status (1 if a check failed)."""
    readback, stats = outcome.readback, outcome.last_stats
    samples = outcome.samples
    read_total = readback.books + readback.tickers
    accepted = None if outcome.delivered is None else outcome.delivered + (outcome.failed or 0) + outcome.undelivered
    lost = None if accepted is None or readback.error else accepted - read_total
    rss = rss_growth(samples, outcome.duration_s)
    growth = rss.growth
    cpu = values(samples, "cpu_pct")
    p99 = values(samples, "delivery_p99_ms")
    books_rate = values(samples, "books_in_per_s")
    faults = Counter(f.kind for f in outcome.faults)
    checks = {
        "0 lost": lost == 0,
        "0 failed deliveries": outcome.failed == 0 and outcome.undelivered == 0,
        "0 unmarked gaps": readback.error is None
        and readback.books > 0
        and readback.unmarked_gaps == 0
        and readback.changes_without_snapshot == 0,
        f"RSS growth < {RSS_GROWTH_LIMIT:.0%}": not math.isnan(growth) and growth < RSS_GROWTH_LIMIT,
        "capture exited 0": outcome.exit_code == 0,
        "recovered after the last fault": outcome.recovered_s is not None,
    }
    by_type = readback.by_type
    median_books = percentile(books_rate, 0.5)
    sim_cpu = percentile(values(samples, "simulator_cpu_pct"), 0.5)
    broker_cpu = percentile(values(samples, "broker_cpu_pct"), 0.5)
    broker_rss = [fmt(float(s[0]["broker_rss_mb"]) if s else None, ".0f") for s in (samples[:1], samples[-1:])]
    counters = " / ".join(str(int(stats.get(k, 0))) for k in ("gaps", "resyncs", "reconnects", "malformed_frames"))
    rows = [
        ("duration", f"{outcome.duration_s / 60:.1f} min, {len(samples)} samples"),
        ("chain", f"{outcome.instruments:,} instruments, simulator at {outcome.events_per_s:,.0f} book events/s"),
        ("book messages in", f"{int(stats.get('messages_in', 0)):,} ({fmt(median_books)}/s median)"),
        ("ticker messages in", f"{int(stats.get('tickers_in', 0)):,}"),
        ("records accepted (delivered + failed + undelivered)", fmt(accepted)),
        (
            "records read back (books + tickers)",
            f"{read_total:,} ({readback.books:,} + {readback.tickers:,}, read in {readback.seconds:.0f} s)",
        ),
        ("**lost**", f"**{fmt(lost)}**"),
        ("delivery failed / undelivered at exit", f"{fmt(outcome.failed)} / {outcome.undelivered}"),
        ("snapshots / changes", f"{by_type['snapshot']:,} / {by_type['change']:,}"),
        (
            "gap / disconnect / unsubscribed markers",
            f"{by_type['gap']:,} / {by_type['disconnect']:,} / {by_type['unsubscribed']:,}",
        ),
        (
            "**unmarked gaps**",
            f"**{readback.unmarked_gaps}** (changes before any snapshot: {readback.changes_without_snapshot})",
        ),
        ("capture: gaps / resyncs / reconnects / malformed frames", counters),
        ("faults", ", ".join(f"{kind} {faults[kind]}" for kind in FAULT_KINDS) + f" ({len(outcome.faults)} in all)"),
        (
            "capture CPU, % of a core: median / p95",
            f"{fmt(percentile(cpu, 0.5), '.1f')} / {fmt(percentile(cpu, 0.95), '.1f')}",
        ),
        (
            f"capture RSS, median of minutes {rss.baseline_s / 60:.0f}-{(rss.baseline_s + rss.window_s) / 60:.0f} "
            f"/ of the last {rss.window_s / 60:.0f} / **growth**",
            f"{fmt(rss.base_mb, '.1f')} MB / {fmt(rss.end_mb, '.1f')} MB / **{fmt(growth * 100, '+.2f')} %**",
        ),
        (
            "capture RSS peak after the warm-up / trend",
            f"{fmt(rss.peak_mb, '.1f')} MB / {fmt(rss.slope_mb_per_h, '+.2f')} MB an hour",
        ),
        (
            "delivery p99: median / max of samples",
            f"{fmt(percentile(p99, 0.5), '.1f')} ms / {fmt(max(p99, default=None), '.1f')} ms",
        ),
        ("simulator / broker CPU median, % of a core", f"{fmt(sim_cpu, '.1f')} / {fmt(broker_cpu, '.1f')}"),
        ("broker RSS first / last sample", f"{broker_rss[0]} MB / {broker_rss[1]} MB"),
        ("recovered after the run's last fault", fmt(outcome.recovered_s, ".1f", " s")),
    ]
    if outcome.stopped_early:
        rows.insert(1, ("stopped early", "yes (Ctrl-C)"))
    print()
    print("| soak | |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print()
    for name, ok in checks.items():
        print(f"- {'pass' if ok else 'FAIL'}: {name}")
    for example in readback.examples:
        print(f"- unmarked gap: {example}")
    for problem in outcome.problems:
        print(f"- problem: {problem}")
    return 0 if all(checks.values()) else 1


# -- the plot -------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def draw(samples: list[dict[str, Any]], faults: list[Fault], path: Path, title: str) -> None:
    """Stacked panels on one time axis, a vertical line at each fault, coloured by kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(float(s["t_s"]) / 60, float(s[key])) for s in samples if s.get(key, "") != ""]
        return [p[0] for p in points], [p[1] for p in points]

    plt.rcParams.update({"font.size": 11})
    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True, constrained_layout=True)
    cpu, rss, rate, latency = axes
    cpu.plot(*series("cpu_pct"), color="tab:blue", lw=1.4)
    cpu.set_ylabel("CPU\n% of a core")
    cpu.set_ylim(bottom=0)
    rss.plot(*series("rss_mb"), color="tab:green", lw=1.4)
    rss.set_ylabel("RSS MB")
    if samples:
        growth = rss_growth(samples, float(samples[-1]["t_s"]))
        for start_s in (growth.baseline_s, float(samples[-1]["t_s"]) - growth.window_s):
            rss.axvspan(start_s / 60, (start_s + growth.window_s) / 60, color="tab:green", alpha=0.08)
        rss.annotate(" growth: the median of the last shaded window against the first's",
                     (growth.baseline_s / 60, 0.06), xycoords=("data", "axes fraction"), fontsize=9)  # fmt: skip
    minutes, books = series("books_in_per_s")
    _, tickers = series("tickers_in_per_s")
    rate.plot(minutes, [b + t for b, t in zip(books, tickers, strict=True)], color="tab:blue", lw=1.2,
              label="in (books + tickers)")  # fmt: skip
    rate.plot(*series("books_in_per_s"), color="tab:cyan", lw=1.0, label="books in")
    rate.plot(*series("delivered_per_s"), color="tab:orange", lw=1.2, label="delivered to Kafka")
    rate.set_ylabel("messages/s")
    rate.set_ylim(bottom=0)
    rate.legend(loc="lower left", fontsize=9, ncol=3, framealpha=0.8)
    latency.plot(*series("delivery_p99_ms"), color="tab:red", lw=1.4)
    latency.set_yscale("log")
    latency.set_ylabel("delivery p99\nms (log)")
    latency.set_xlabel("minutes")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        for fault in faults:
            ax.axvline(fault.t_s / 60, color=FAULT_COLORS.get(fault.kind, "black"), lw=0.9, alpha=0.6, ls="--")
    kinds = [kind for kind in FAULT_KINDS if any(f.kind == kind for f in faults)]
    handles = [Line2D([], [], color=FAULT_COLORS[k], ls="--", lw=1.2, label=k) for k in kinds]
    if handles:
        cpu.legend(handles=handles, title="faults", loc="upper center", bbox_to_anchor=(0.5, 1.42),
                   ncol=len(handles), fontsize=9, title_fontsize=9, frameon=False)  # fmt: skip
    fig.suptitle(title, fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def faults_from_csv(path: Path) -> list[Fault]:
    if not path.exists():
        return []
    return [Fault(float(row["t_s"]), row["kind"], row["detail"]) for row in read_csv(path) if row["kind"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the soak (default 60)")
    parser.add_argument("--rate", type=float, default=1500.0, help="book messages/s over the chain (default 1500)")
    parser.add_argument("--instruments", type=int, default=1100, help="size of the simulated chain (default 1100)")
    parser.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults (default 60)")
    parser.add_argument("--stall-seconds", type=float, default=8.0, help="length of a broker stall (default 8)")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--plot", default="docs/soak.png", help="the PNG; samples go beside it as .csv")
    parser.add_argument("--workdir", default=None, help="logs and capture's config (default: a new temp dir)")
    parser.add_argument("--seed", type=int, default=1, help="the market's and the fault targets' seed")
    parser.add_argument("--replot", metavar="CSV", help="only redraw the plot of a run's samples CSV")
    args = parser.parse_args()
    plot = Path(args.plot)
    if args.replot:
        samples_path = Path(args.replot)
        faults = faults_from_csv(samples_path.with_name(samples_path.stem + "-faults.csv"))
        draw(read_csv(samples_path), faults, plot, f"capture soak ({samples_path.name})")
        print(f"plot: {plot}")
        return 0
    outcome = Soak(args).run()
    status = report(outcome, args)
    if outcome.samples:
        title = (f"optionstream capture soak: {outcome.duration_s / 60:.0f} min, {outcome.instruments:,} books, "
                 f"{args.rate:,.0f} book msg/s + tickers, {len(outcome.faults)} faults")  # fmt: skip
        draw(outcome.samples, outcome.faults, plot, title)
        print(f"\nplot: {plot}")
    return status


if __name__ == "__main__":
    sys.exit(main())
