"""The replay server's throughput against reading the same window of the archive alone.

    python benchmarks/replay.py [--instruments 300] [--messages 250000] [--hours 2] [--tickers 0.2]
                                [--repeat 3] [--phases read,replay-1,replay-2] [--data-dir DIR] [--reuse]
                                [--profile]

A quick run: ``python benchmarks/replay.py --messages 50000 --repeat 1``.

The archive: :mod:`archive`'s simulated market (this folder's ``archive.py``), ``--messages`` book
records over the first ``--hours`` hours of its day, written by its ``write_day`` through the
archive's own calls (``explode``, ``ArchiveStore.write``, compaction, checkpoints; the capture
session's subscribe snapshots at 00:00:02), and beside them ``--tickers`` tickers per book record
(Deribit's ticker object, at random times, uniform over the instruments) written into the ticker
table by ``ArchiveStore.write``, a file per partition and hour as the archive writes ticker files.
The window replayed is 00:01 to the last hour's end (the books at 00:01 from ``books_at``).
``--data-dir`` keeps the archive, ``--reuse`` reads it again.

Each phase runs in a fresh subprocess over the same window; orders rotate across ``--repeat``, and
medians are reported:

- ``read``: **the baseline**: ``replay.loading.window_events`` (DuckDB reading one hour directory at
  a time, rows as dicts, grouped into book and ticker events, the two tables merged) consumed in a
  plain loop: what the replay reads before it serves anything;
- ``replay-N``: the real ``optionstream replay --as-fast-as-possible --port 0`` (the test support's
  ``ReplayServer``) and N plain ``websockets`` clients (asyncio, no compression, on one event loop in
  the phase's process), each sending ``public/get_instruments`` and subscribing to every book and
  ticker channel, checking each book's ``prev_change_id`` chain and counting notifications until it
  has every one the server says it played ("replay finished": the books at the start, then every
  event but markers and changes of unsynced books); with N > 1 the clock serves them all;
- ``exchange`` (optional): the replay without sockets: ``open_replay`` (its prefetch thread) and the
  simulator's pure ``Exchange``, one session subscribed to every channel, ``advance`` in a loop and
  the outbox emptied after each step: every frame made and encoded, none sent;
- ``serve-N`` (optional): ``replay-N`` with the window read into memory before the server listens
  (the feed a ``ListFeed``, no prefetch thread): serving alone, the ceiling if reading were free.

A replay's rates run from the first event played (the notification after the snapshots of the
books at 00:01, sent on subscribe) to the last notification; events/s counts the window's events
(book records, markers included, and tickers) in every phase, so the ratio to ``read`` compares the
same work. The server's CPU (``/proc/<pid>/stat``: all its threads, and its event loop's thread
alone) is over the same interval, its RSS is its peak (``VmHWM``). "lead" is how long the prefetch
thread had been reading when the first event was played (from the server's "replay window" log
line): the replay's head start over ``read``.

``--profile``: afterwards, the read taken apart (DuckDB's scan alone, every column out as tuples,
the replay's columns out as tuples, as dicts, as events), one ``serve-1`` run, and one under cProfile
(the server's event loop: playing, encoding, websockets, the socket).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import queue
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # optionstream_pipeline_tests is not installed
import archive as market_of

from optionstream_pipeline_tests.support.replay_server import ReplayServer

REPO_ROOT = Path(__file__).resolve().parents[1]
TICKER_TOPIC = "bench-tickers"
# One client: the clock starts at its subscription. More: they all subscribe before it starts (each gets
# the books at --from). The prefetch thread reads from the server's start on: it leads the clock.
START_DELAY_S = {1: 0.0, "more": 0.2}
SUBSCRIBE_BATCH = 200  # channels per public/subscribe (a request stays under Deribit's 32 KiB)
IDLE_S = 60.0  # a client that receives nothing this long gives up (and the run fails)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Deribit's option ticker object (the fields of a 2021 mainnet recording, in its order).
TICKER = (
    '{"timestamp":%d,"stats":{"volume_usd":%.2f,"volume":%.1f,"price_change":%.4f,"low":%.4f,"high":%.4f},'
    '"state":"open","settlement_price":%.8f,"open_interest":%.1f,"min_price":0.0001,"max_price":%.4f,'
    '"mark_price":%.8f,"mark_iv":%.2f,"last_price":%.4f,"interest_rate":0.0,"instrument_name":"%s",'
    '"index_price":%.2f,"greeks":{"vega":%.5f,"theta":%.5f,"rho":%.5f,"gamma":%.5f,"delta":%.5f},'
    '"estimated_delivery_price":%.2f,"bid_iv":%.2f,"best_bid_price":%.4f,"best_bid_amount":%.1f,'
    '"best_ask_price":%.4f,"best_ask_amount":%.1f,"ask_iv":%.2f,"underlying_price":%.2f,"underlying_index":"%s"}'
)


# -- the archive ---------------------------------------------------------------------------------


def window(hours: int) -> tuple[datetime, datetime]:
    return market_of.DAY + timedelta(minutes=1), market_of.DAY + timedelta(hours=hours)


def write_tickers(root: Path, names: list[str], count: int, hours: int, seed: int = 13) -> int:
    """``count`` tickers over ``hours`` hours, into the ticker table as the archive writes it: per
    Kafka partition (the book's partitioning), a file per hour of ``ticker_time``."""
    from optionstream_pipeline.archive.layout import ArchiveFile, hour_of
    from optionstream_pipeline.archive.progress import Fingerprint
    from optionstream_pipeline.archive.store import ArchiveStore, FileState
    from optionstream_pipeline.archive.ticker_schema import explode
    from optionstream_pipeline.kafka.reader import TopicRecord
    from optionstream_pipeline.records.book import encode_capture_meta
    from optionstream_pipeline.records.ticker import decode_ticker, encode_ticker

    rng = random.Random(seed)
    store = ArchiveStore(root)
    capture = encode_capture_meta(zlib.crc32(b"session-1").to_bytes(4, "big").hex() + "c0ffee00", 0)
    start_ms = int(market_of.DAY.timestamp() * 1000)
    times = sorted(start_ms + 2500 + int(rng.random() * (hours * market_of.MS_PER_HOUR - 2500)) for _ in range(count))
    by_partition: list[list[TopicRecord]] = [[] for _ in range(market_of.PARTITIONS)]
    partition_of = {name: market_of.murmur2_partition(name.encode(), market_of.PARTITIONS) for name in names}
    marks = {name: 0.01 + 0.2 * rng.random() for name in names}
    for at_ms, name in zip(times, rng.choices(names, k=count), strict=True):
        mark = marks[name] = max(0.0001, marks[name] * (1 + 0.002 * (rng.random() - 0.5)))
        iv = 45 + 20 * rng.random()
        data = TICKER % (
            at_ms, 1e5 * rng.random(), 100 * rng.random(), rng.random() - 0.5, mark * 0.9, mark * 1.1, mark,
            1000 * rng.random(), mark * 3, mark, iv, mark, name, 100_000 + rng.random(), rng.random(),
            -rng.random(), rng.random(), 1e-5 * rng.random(), rng.random() - 0.5, 100_000 + rng.random(), iv - 1,
            mark * 0.99, 10 * rng.random(), mark * 1.01, 10 * rng.random(), iv + 1, 100_100 + rng.random(),
            "BTC-" + name.split("-")[1],
        )  # fmt: skip
        value = encode_ticker(name, "100ms", at_ms, at_ms * 1000 + 1500, msgspec.Raw(data.encode()), capture)
        records = by_partition[partition_of[name]]
        records.append(TopicRecord(partition_of[name], len(records), at_ms, name, value, decode_ticker(value)))
    for partition, records in enumerate(by_partition):
        hours_of: dict[int, list[TopicRecord]] = defaultdict(list)
        for record in records:
            hours_of[hour_of(record.timestamp_ms * 1000)].append(record)
        for hour, chunk in hours_of.items():
            chunk_times = [record.timestamp_ms * 1000 for record in chunk]  # sorted: ticker_time is its own time
            file = ArchiveFile(TICKER_TOPIC, partition, 0, chunk[0].offset, chunk[-1].offset, hour, "ticker")
            store.write(file, explode(chunk, chunk_times, 0), FileState(chunk_times[-1], Fingerprint.of(chunk[-1])))
    return count


def build_archive(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    work = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="optionstream-bench-replay-"))
    root, manifest_path = work / "archive", work / "manifest.json"
    wanted = {"instruments": args.instruments, "messages": args.messages, "hours": args.hours,
              "tickers": args.tickers, "version": 1}  # fmt: skip
    if args.reuse and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if all(manifest.get(k) == v for k, v in wanted.items()):
            print(f"  reusing the archive in {root} (written in {manifest['seconds']:.0f} s)", flush=True)
            return root, manifest
        print(f"  {root} holds another archive: writing it again", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    began = time.perf_counter()
    day = SimpleNamespace(instruments=args.instruments, day_messages=args.messages, run_minutes=5)
    books = market_of.write_day(day, root, hours=args.hours)
    tickers = write_tickers(root, books["names"], int(args.messages * args.tickers), args.hours)
    book_bytes, book_files = market_of.tree_bytes(root / "book")
    ticker_bytes, ticker_files = market_of.tree_bytes(root / "ticker")
    manifest = {**wanted, "book_records": books["messages"], "book_rows": books["rows"], "ticker_records": tickers,
                "book_files": book_files, "book_bytes": book_bytes, "ticker_files": ticker_files,
                "ticker_bytes": ticker_bytes, "seconds": time.perf_counter() - began}  # fmt: skip
    manifest_path.write_text(json.dumps(manifest))
    return root, manifest


# -- measuring -----------------------------------------------------------------------------------


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of process ``pid``: all its threads, and its main thread alone."""

    def ticks(path: str) -> int:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)

    return ticks(f"/proc/{pid}/stat") / CLOCK_TICKS, ticks(f"/proc/{pid}/task/{pid}/stat") / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Sink:
    """The ``SessionIO`` of a session without a socket: its outbox is emptied by the loop."""

    def wake(self) -> None:
        pass

    def abort(self) -> None:
        raise RuntimeError("the session's outbox overflowed")

    def close(self, code: int, reason: str) -> None:
        pass


# -- the phases, each in its own process ---------------------------------------------------------


def phase_read(root: str, hours: int) -> dict[str, Any]:
    from optionstream_pipeline.query.database import open_archive
    from optionstream_pipeline.replay.loading import ticker_source, window_events
    from optionstream_pipeline.replay.source import TickerEvent

    start, stop = window(hours)
    connection = open_archive(root, ":memory:")
    tickers = ticker_source(connection, root)
    began_cpu, began = cpu_s(), time.perf_counter()
    events = ticker_events = 0
    for event in window_events(connection.cursor(), tickers, start, stop):
        events += 1
        ticker_events += isinstance(event, TickerEvent)
    return {"events": events, "tickers": ticker_events, "seconds": time.perf_counter() - began,
            "cpu_s": cpu_s() - began_cpu}  # fmt: skip


def subscribe_all(exchange: Any, session: Any) -> int:
    """``public/get_instruments`` and every book and ticker channel subscribed, as a client does."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "public/get_instruments", "params": {"currency": "BTC"}}
    exchange.handle_frame(session, msgspec.json.encode(request), time.time())
    names = [i["instrument_name"] for i in msgspec.json.decode(session.outbox.popleft())["result"]]
    channels = [f"{kind}.{name}.100ms" for name in names for kind in ("book", "ticker")]
    for start in range(0, len(channels), SUBSCRIBE_BATCH):
        request = {"jsonrpc": "2.0", "id": 2, "method": "public/subscribe",
                   "params": {"channels": channels[start : start + SUBSCRIBE_BATCH]}}  # fmt: skip
        before = len(session.outbox)
        exchange.handle_frame(session, msgspec.json.encode(request), time.time())
        del session.outbox[before]  # the reply (the books' snapshots follow it)
    return len(names)


def phase_exchange(root: str, hours: int) -> dict[str, Any]:
    from optionstream_pipeline.replay import loading
    from optionstream_pipeline.simulator.exchange import Exchange
    from optionstream_pipeline.simulator.settings import SimulatorSettings

    start, stop = window(hours)
    source = loading.open_replay(root, start, stop, None, 0.0)
    exchange = Exchange(SimulatorSettings(control_methods=False), source, time.time())
    session = exchange.open_session(_Sink(), "bench", time.time())
    instruments = subscribe_all(exchange, session)
    outbox = session.outbox
    seeds = len(outbox)
    frames, frame_bytes = seeds, sum(map(len, outbox))
    outbox.clear()
    began_cpu, began = cpu_s(), time.perf_counter()
    waits = 0
    while not source.finished:
        exchange.advance(time.time())
        if outbox:
            frames += len(outbox)
            frame_bytes += sum(map(len, outbox))
            outbox.clear()
        elif source.feed.peek() is None and not source.finished:
            waits += 1  # the prefetch thread is behind: the server's timer would sleep too
            time.sleep(0.001)
    played = source.played
    return {"instruments": instruments, "seeds": seeds, "messages": frames, "frame_bytes": frame_bytes,
            "events": played.book_records + played.tickers, "tickers": played.tickers, "markers": played.markers,
            "held_back": played.held_back, "waits": waits, "seconds": time.perf_counter() - began,
            "cpu_s": cpu_s() - began_cpu}  # fmt: skip


class _Data(msgspec.Struct):
    type: str | None = None
    change_id: int | None = None
    prev_change_id: int | None = None


class _Params(msgspec.Struct):
    channel: str
    data: _Data


class _Frame(msgspec.Struct):
    """What a client checks of a frame: a notification's channel, a book's type and ids; a reply's id."""

    method: str | None = None
    params: _Params | None = None
    id: int | None = None
    result: list[str] | None = None


async def call(ws: Any, request_id: int, method: str, **params: Any) -> Any:
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    while True:
        message = json.loads(await ws.recv())
        if message.get("id") == request_id:
            return message["result"]


class Client:
    """One Deribit client: subscribes to everything, counts notifications, checks the books' chains.

    The subscriptions go out in batches without waiting (each batch's books' snapshots follow its
    reply, before the next reply), the replies are read in the same loop as the notifications. It
    reads until :attr:`expected` (known once the server says what it played) are in."""

    def __init__(self, url: str, seeds: int, on_first_played: Any) -> None:
        self.url, self.seeds, self.on_first_played = url, seeds, on_first_played
        self.expected: float = float("inf")
        self.count = self.books = self.tickers = self.breaks = self.other = self.subscribed = self.channels = 0
        self.first_played = self.last = self.first_played_wall = 0.0
        self.ws: Any = None

    async def run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        decode = msgspec.json.Decoder(_Frame).decode
        async with connect(self.url, compression=None, max_size=None) as ws:
            self.ws = ws
            await call(ws, 1, "public/hello", client_name="bench-replay", client_version="1")
            names = [i["instrument_name"] for i in await call(ws, 2, "public/get_instruments", currency="BTC")]
            channels = [f"{kind}.{name}.100ms" for name in names for kind in ("book", "ticker")]
            self.channels = len(channels)
            for start in range(0, len(channels), SUBSCRIBE_BATCH):
                batch = channels[start : start + SUBSCRIBE_BATCH]
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 3 + start, "method": "public/subscribe",
                                          "params": {"channels": batch}}))  # fmt: skip
            last_change: dict[str, int | None] = {}
            clock = time.perf_counter
            while self.count < self.expected:
                try:
                    frame = decode(await ws.recv(decode=False))
                except ConnectionClosed:  # closed by the watcher: every notification the server played is in
                    return
                self.last = clock()
                if frame.method != "subscription" or frame.params is None:
                    if frame.result is not None:
                        self.subscribed += len(frame.result)
                    else:
                        self.other += 1
                    continue
                self.count += 1
                if self.count == self.seeds + 1:
                    self.first_played, self.first_played_wall = self.last, time.time()
                    self.on_first_played()
                channel, data = frame.params.channel, frame.params.data
                if channel[0] == "t":
                    self.tickers += 1
                    continue
                self.books += 1
                if data.type == "change" and last_change.get(channel) != data.prev_change_id:
                    self.breaks += 1
                last_change[channel] = data.change_id


PLAYED = re.compile(
    r"\((?P<books>\d+) book records \((?P<markers>\d+) markers not sent, (?P<held>\d+) changes of unsynced books "
    r"held back.*\), (?P<tickers>\d+) tickers\)"
)


def notifications(finished: str, seeds: int) -> tuple[int, int]:
    """From the server's "replay finished" line: the window's events played, and the notifications
    a client subscribed to everything gets (the books at the start, then all but markers and held-back changes)."""
    played = PLAYED.search(finished)
    if played is None:
        raise RuntimeError(f"cannot read what the server played from: {finished}")
    books, markers, held, tickers = (int(played[k]) for k in ("books", "markers", "held", "tickers"))
    return books + tickers, seeds + books - markers - held + tickers


# The replay command as it is, optionally with its window read into memory before it listens (a
# ``ListFeed`` instead of the prefetch thread: serving alone, no reading beside it), and optionally
# under cProfile from the moment ``open_replay`` returns (serving only: the process's start, the
# seeding queries and a preloaded window's reading are left out).
SERVER_MAIN = """import sys
from optionstream_pipeline.cli import main
from optionstream_pipeline.replay import cli, loading, source
profile, preload = sys.argv[1], sys.argv[2] == "preload"
if preload:
    loading.PrefetchFeed = source.ListFeed
if profile:
    import cProfile
    profiler, open_replay = cProfile.Profile(), cli.open_replay
    def opened(*args, **kwargs):
        replay = open_replay(*args, **kwargs)
        profiler.enable()
        return replay
    cli.open_replay = opened
try:
    main(sys.argv[3:])
finally:
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
"""


class ScriptedReplayServer(ReplayServer):
    """``ReplayServer``'s command run by :data:`SERVER_MAIN` (the rest as it is)."""

    def __init__(self, profile: str, preload: bool, config: str, *arguments: str) -> None:
        command = [sys.executable, "-c", SERVER_MAIN, profile, "preload" if preload else "-", "replay", "--config",
                   config, "--port", "0"]  # fmt: skip
        self.process = subprocess.Popen([*command, *arguments], stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.log = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for("replay listening on", 300).rsplit(" ", 1)[1].strip()


def phase_replay(
    root: str, hours: int, clients: int, plan: dict[str, Any], preload: bool = False, profile: str = ""
) -> dict[str, Any]:
    start, stop = window(hours)
    work = Path(tempfile.mkdtemp(prefix="optionstream-bench-replay-config-"))
    config = work / "config.yaml"
    config.write_text(json.dumps({"archive": {"path": root}}))  # YAML is a superset of JSON
    delay = START_DELAY_S[1] if clients == 1 else START_DELAY_S["more"]
    arguments = ["--from", start.isoformat(), "--to", stop.isoformat(), "--as-fast-as-possible",
                 "--start-delay", str(delay)]  # fmt: skip
    if preload or profile:
        server: ReplayServer = ScriptedReplayServer(profile, preload, str(config), *arguments)
    else:
        server = ReplayServer(str(config), *arguments)
    pid = server.process.pid
    marks: dict[str, Any] = {}

    def first_played() -> None:
        if "cpu" not in marks:
            marks["cpu"], marks["client_cpu"] = process_cpu_s(pid), cpu_s()

    try:
        group = [Client(server.url, plan["seeds"], first_played) for _ in range(clients)]
        said: dict[str, Any] = {}

        async def watch() -> None:
            """Read the server's log; once it says the replay finished, the clients know what to expect."""
            while "finished" not in said:
                try:
                    line = server.lines.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.05)
                    continue
                server.log.append(line)
                if "replay finished" in line:
                    said["finished"] = line
                    events, expected = notifications(line, plan["seeds"])
                    said["events"], said["expected"] = events, expected
                    for client in group:
                        client.expected = expected
                        if client.count >= expected and client.ws is not None:
                            await client.ws.close()

        async def run_all() -> None:
            tasks = [asyncio.create_task(client.run()) for client in group]
            watcher = asyncio.create_task(watch())
            watched = [client.count for client in group]
            while not all(task.done() for task in tasks):
                await asyncio.wait(tasks, timeout=IDLE_S)
                counts = [client.count for client in group]
                if counts == watched and not all(task.done() for task in tasks):
                    for task in [*tasks, watcher]:
                        task.cancel()
                    raise RuntimeError(f"no notification for {IDLE_S:.0f} s: received {counts}, the server "
                                       f"said {said.get('finished', 'nothing yet')}")  # fmt: skip
                watched = counts
            await asyncio.wait_for(watcher, IDLE_S)
            for task in tasks:
                task.result()

        asyncio.run(run_all())
        cpu, main_cpu = process_cpu_s(pid)
        client_cpu = cpu_s()
        rss = peak_rss_mb(pid)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    began = min(client.first_played for client in group)
    # The prefetch thread's lead: from the server's window line (the thread starts after it) to the first event played
    [window_line] = [line for line in server.log if "replay window" in line]
    read_from = datetime.strptime(window_line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    lead_s = None if preload else min(client.first_played_wall for client in group) - read_from
    seconds = max(client.last for client in group) - began
    return {
        "clients": clients, "messages": sum(client.count for client in group), "expected": said["expected"],
        "played_messages": sum(client.count - plan["seeds"] for client in group), "events": said["events"],
        "books": sum(c.books for c in group), "tickers": sum(c.tickers for c in group),
        "breaks": sum(c.breaks for c in group), "other_frames": sum(c.other for c in group), "seconds": seconds,
        "unsubscribed": sum(c.channels - c.subscribed for c in group),
        "server_cpu_s": cpu - marks["cpu"][0], "server_loop_cpu_s": main_cpu - marks["cpu"][1],
        "client_cpu_s": client_cpu - marks["client_cpu"], "server_rss_mb": rss,
        "finished": said["finished"].split(": ", 1)[-1].strip(), "lead_s": lead_s, "start_delay_s": delay,
    }  # fmt: skip


def run_phase(args: argparse.Namespace) -> None:
    plan = json.loads(args.plan) if args.plan else {}
    if args.phase == "read":
        result = phase_read(args.root, args.hours)
    elif args.phase == "exchange":
        result = phase_exchange(args.root, args.hours)
    else:  # replay-N, serve-N
        kind, clients = args.phase.split("-")
        result = phase_replay(args.root, args.hours, int(clients), plan, preload=kind == "serve")
    result["rss_mb"] = market_of.rss_mb()
    print(json.dumps(result))


def spawn(phase: str, root: Path, hours: int, plan: dict[str, Any] | None = None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--hours", str(hours),
               "--plan", json.dumps(plan or {})]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"phase {phase} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the profile ---------------------------------------------------------------------------------


def read_parts(root: str, hours: int) -> list[tuple[str, float, int]]:
    """The read taken apart, in this process, one pass each: (what, seconds, rows or events)."""
    from optionstream_pipeline.query.database import open_archive
    from optionstream_pipeline.replay import loading

    start, stop = window(hours)
    connection = open_archive(root, ":memory:")
    tickers = loading.ticker_source(connection, root)
    tables = [
        ("book", loading.BOOK_COLUMNS, "book_time", loading.BOOK_ORDER),
        ("ticker", loading.TICKER_COLUMNS, "ticker_time", loading.TICKER_ORDER),
    ]
    tables = tables[: 2 if tickers else 1]
    hours_in = [start.replace(minute=0) + loading.HOUR * k for k in range(hours + 1)]

    def fetch(every_column: bool) -> int:
        rows = 0
        for hour in hours_in:
            for table, columns, column, order in tables:
                select = "*" if every_column else columns  # "*": every column, its times as datetimes
                cursor = connection.cursor().execute(  # as loading._rows queries, rows as tuples
                    f"SELECT {select} FROM {table} WHERE date = $1 AND hour = $2 AND {column} > $3 "
                    f"AND {column} <= $4 ORDER BY {order}",
                    [hour.date(), hour.hour, start, stop],
                )
                while batch := cursor.fetchmany(loading.FETCH_ROWS):
                    rows += len(batch)
        return rows

    def dicts() -> int:
        rows = 0
        for hour in hours_in:
            for table, columns, column, order in tables:
                for _ in loading._rows(connection.cursor(), table, columns, column, order, hour, start, stop):
                    rows += 1
        return rows

    def count(sql: str) -> int:
        return connection.execute(sql, [start, stop]).fetchall()[0][0]

    def events() -> int:
        return sum(1 for _ in loading.window_events(connection.cursor(), tickers, start, stop))

    parts = []
    for what, work in [
        ("DuckDB alone: `count(*)` of the window's book rows (scan and filter, no rows out)",
         lambda: count("SELECT count(*) FROM book WHERE book_time > $1 AND book_time <= $2")),
        ("DuckDB, rows out, `SELECT *` sorted as `_rows`: every column, times as tz-aware datetimes",
         lambda: fetch(True)),
        ("DuckDB, rows out, the replay's columns (`BOOK_COLUMNS`, times as integer µs)", lambda: fetch(False)),
        ("+ a dict per row: `loading._rows`", dicts),
        ("+ grouped into events, tickers rebuilt, merged: `window_events` (the read phase)", events),
    ]:  # fmt: skip
        began = time.perf_counter()
        found = work()
        parts.append((what, time.perf_counter() - began, found))
    return parts


# (what, rule): a function's own time goes to the first rule its file or name matches. cProfile does not
# see DuckDB's pybind11 methods: fetchmany's own time is counted in its caller, loading._rows.
CATEGORIES = [
    ("pytz: DuckDB's TIMESTAMPTZ values made tz-aware datetimes (called back per value)", ("pytz",)),
    ("`loading._rows`: DuckDB execute + fetchmany (unseen, counted here) and a dict per row", ("loading.py:_rows",)),
    ("datetime.replace (the same conversions)", ("'replace' of 'datetime",)),
    ("the process's start: imports, open_replay's queries (seeds, channels)",
     ("seed_books", "open_archive", "window_channels", "archive_span", "check_window", "session_ends",
      "compile", "builtins.exec", "marshal", "_imp.", "importlib", "<frozen", "__build_class__", "re/_")),
    ("grouping rows into book events (book_events, _book_event, epoch_us, sorted)",
     ("book_events", "_book_event", "_record_id", "epoch_us", "sorted", "source.py:<lambda>",
      "source.py:<genexpr>")),
    ("tickers rebuilt (ticker_events, ticker_data, deribit_ticker)",
     ("ticker_events", "ticker_data", "deribit_ticker", "to_builtins", "ticker_schema")),
    ("merging the tables (heapq.merge), the feed (its lock)",
     ("heapq", "merged", "window_events", "loading.py:", "threading.py")),
    ("playing: ArchiveSource.advance, _play, Book.apply, _notification",
     ("source.py:", "isinstance", "'update'", "'get'", "setdefault", "'pop' of 'dict'", "'items'")),
    ("encode_notification (msgspec.json.encode of the frame)", ("encode_notification", "encode")),
    ("publish, deliver, Session.send (outbox)", ("exchange.py:", "'append'", "popleft", "wake", "'set'")),
    ("websockets (framing, send, recv, its context managers)",
     ("websockets", "contextlib", "anext", "BytesIO", "_struct")),
    ("the socket write: socket.send",
     ("selector_events", "'send' of", "sendto")),
    ("asyncio event loop (epoll wait included)", ("asyncio", "selectors", "'poll'", "'select'", "_weakrefset")),
    ("the simulator's timer and send loop", ("server.py:",)),
]  # fmt: skip


def categorise(stats: pstats.Stats) -> tuple[dict[str, float], list[tuple[float, str]]]:
    totals: dict[str, float] = defaultdict(float)
    functions = []
    for (file, line, name), (_, _, tottime, _, _) in stats.stats.items():
        label = f"{Path(file).name}:{name}" if file != "~" else name
        key = f"{file}:{name}"
        for what, rules in CATEGORIES:
            if any(rule in key or rule in label for rule in rules):
                totals[what] += tottime
                break
        else:
            totals["other"] += tottime
        functions.append((tottime, f"{Path(file).parent.name}/{Path(file).name}:{line}({name})"
                          if file != "~" else name))  # fmt: skip
    return totals, sorted(functions, reverse=True)


def print_profile(title: str, stats: pstats.Stats, messages: int, seconds: float, top: int = 12) -> None:
    totals, functions = categorise(stats)
    total = sum(totals.values())
    print(f"\n{title}: {total:.1f} s of own time counted, {messages:,} messages "
          f"in {seconds:.1f} s ({messages / seconds:,.0f} messages/s under the profiler):\n")  # fmt: skip
    print("| where | seconds | share | µs/message |")
    print("|---|---|---|---|")
    for what, spent in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"| {what} | {spent:.2f} | {spent / total:.0%} | {spent / messages * 1e6:.2f} |")
    print(f"\nThe {top} functions with the most own time:\n")
    print("| function | seconds | µs/message |")
    print("|---|---|---|")
    for spent, label in functions[:top]:
        print(f"| `{label}` | {spent:.2f} | {spent / messages * 1e6:.2f} |")


def profile(root: Path, hours: int, plan: dict[str, Any]) -> None:
    print(f"\n## Where the time goes\n\nThe read taken apart (this process, one pass each, {plan['events']:,} events; "
          "DuckDB's own threads beside it):\n")  # fmt: skip
    print("| step | seconds | rows or events | µs/event | events/s |")
    print("|---|---|---|---|---|")
    for what, seconds, found in read_parts(str(root), hours):
        print(f"| {what} | {seconds:.2f} | {found:,} | {seconds / plan['events'] * 1e6:.1f} | "
              f"{plan['events'] / seconds:,.0f} |")  # fmt: skip
    served = phase_replay(str(root), hours, 1, plan, preload=True)
    f = figures("serve-1", served)
    print(f"\nServing alone (serve-1: the same command and client, the window read into memory before the server "
          f"listens, no reading beside the serving): {served['events'] / served['seconds']:,.0f} events/s, "
          f"{f['messages']:,.0f} messages/s, server CPU {f['cpu'] * 1e6:.1f} µs/message (its loop thread "
          f"{f['loop'] * 1e6:.1f}), {f['cores']:.2f} cores busy, client {f['client'] * 1e6:.1f} µs/message, "
          f"server RSS {f['rss']:.0f} MB", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="optionstream-bench-replay-profile-") as work:
        path = str(Path(work) / "server.prof")
        served = phase_replay(str(root), hours, 1, plan, preload=True, profile=path)
        print_profile("The same under cProfile (the server from the end of open_replay on: its event loop's "
                      "thread, the only one running Python then)", pstats.Stats(path), served["messages"],
                      served["seconds"])  # fmt: skip


# -- the run -------------------------------------------------------------------------------------

COLUMNS = ("| run | phase | events/s | messages/s | / read | CPU µs/message | server loop µs/message | cores busy | "
           "client CPU µs/message | RSS MB | lead s |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=300)
    parser.add_argument("--messages", type=int, default=250_000, help="book records in the archive")
    parser.add_argument("--hours", type=int, default=2, help="hours of book time the archive spans")
    parser.add_argument("--tickers", type=float, default=0.2, help="tickers per book record")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phases", default="read,replay-1,replay-2",
                        help="of read, exchange, replay-N (N clients); default %(default)s")  # fmt: skip
    parser.add_argument("--data-dir", help="keep the archive here (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true", help="reuse the archive in --data-dir")
    parser.add_argument("--profile", action="store_true", help="then take the replay apart (timings, cProfile)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        return run_phase(args)
    phases = args.phases.split(",")
    if "read" not in phases or not all(re.fullmatch(r"read|exchange|(replay|serve)-[1-9]\d*", p) for p in phases):
        parser.error(f"--phases {args.phases}: read, exchange, replay-N or serve-N (and read among them)")

    start, stop = window(args.hours)
    print(f"# the replay vs reading its window: {args.messages:,} book records + {args.tickers:g} tickers per record, "
          f"{args.instruments} instruments, {args.hours} h of book time, {os.cpu_count()} cores\n\n"
          f"    {' '.join(['python', *sys.argv])}\n", flush=True)  # fmt: skip
    root, archive = build_archive(args)
    try:
        print(f"  archive: {archive['book_records']:,} book records ({archive['book_rows']:,} rows, "
              f"{archive['book_files']} files, {archive['book_bytes'] / 1e6:.1f} MB), {archive['ticker_records']:,} "
              f"tickers ({archive['ticker_files']} files, {archive['ticker_bytes'] / 1e6:.1f} MB), written in "
              f"{archive['seconds']:.0f} s", flush=True)  # fmt: skip
        plan = {"seeds": seeds_at(root, start)}
        print(f"  window {start:%H:%M} to {stop:%H:%M}, {plan['seeds']} books at the start (snapshots on subscribe)\n",
              flush=True)  # fmt: skip
        print(COLUMNS)
        print(separator(COLUMNS))
        runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for repetition in range(args.repeat):
            shift = repetition % len(phases)
            order = phases[shift:] + phases[:shift]
            order = order if repetition % 2 == 0 else order[::-1]
            results = {phase: spawn(phase, root, args.hours, plan) for phase in order}
            read_rate = results["read"]["events"] / results["read"]["seconds"]
            for phase in phases:
                r = results[phase]
                check(phase, r, plan)  # the first run's counts are the reference for every later one
                r["run"], r["order"], r["events_per_s"] = (
                    repetition + 1,
                    order.index(phase) + 1,
                    r["events"] / r["seconds"],
                )
                r["ratio"] = r["events_per_s"] / read_rate
                runs[phase].append(r)
                print(row(phase, r), flush=True)
        print_summary(runs, phases, plan)
        if args.json:
            Path(args.json).write_text(json.dumps({"archive": archive, "plan": plan, "runs": runs}, indent=2))
        if args.profile:
            profile(root, args.hours, plan)
    finally:
        if not args.data_dir:
            shutil.rmtree(root.parent, ignore_errors=True)


def separator(header: str) -> str:
    return "|---" * (header.count("|") - 1) + "|"


def seeds_at(root: Path, start: datetime) -> int:
    """The books a client is sent on subscribe: those reliable at ``start`` (the replay's own seeding)."""
    from optionstream_pipeline.query.database import open_archive
    from optionstream_pipeline.replay.loading import seed_books

    return sum(seed.reliable for seed in seed_books(open_archive(root, ":memory:"), start))


def check(phase: str, r: dict[str, Any], plan: dict[str, Any]) -> None:
    """Every phase the same events; every client every notification the server played, in order."""
    if plan.setdefault("events", r["events"]) != r["events"]:
        raise RuntimeError(f"{phase}: {r['events']:,} events, an earlier phase {plan['events']:,}")
    if phase in ("read", "exchange"):
        plan.setdefault("tickers", r["tickers"])
    if phase.startswith(("replay-", "serve-")):
        expected = plan.setdefault("messages", r["expected"])
        if r["expected"] != expected or r["messages"] != expected * r["clients"]:
            raise RuntimeError(f"{phase}: {r['messages']:,} notifications ({r['clients']} clients), the server "
                               f"played {r['expected']:,} a client, {expected:,} in an earlier phase")  # fmt: skip
        if r["breaks"] or r["other_frames"] or r["unsubscribed"]:
            raise RuntimeError(f"{phase}: {r['breaks']} breaks in a book's change_id chain, {r['other_frames']} "
                               f"other frames, {r['unsubscribed']} channels not subscribed")  # fmt: skip
        plan["finished"] = r["finished"]
    elif phase == "exchange" and plan.setdefault("messages", r["messages"]) != r["messages"]:
        raise RuntimeError(f"exchange: {r['messages']:,} frames, {plan['messages']:,} in an earlier phase")


def figures(phase: str, r: dict[str, Any]) -> dict[str, float | None]:
    """A run's figures: messages/s; CPU µs per message (read: per event, its process; exchange: per frame,
    its process; replay: the server's, per notification played), the server's loop thread per
    notification, the cores the process kept busy (its CPU over the wall time), the client's CPU per
    notification, RSS MB (the replay: the server's peak), the prefetch thread's lead."""
    if phase == "read":
        return {"messages": None, "cpu": r["cpu_s"] / r["events"], "loop": None, "cores": r["cpu_s"] / r["seconds"],
                "client": None, "rss": r["rss_mb"], "lead": None}  # fmt: skip
    if phase == "exchange":
        return {"messages": r["messages"] / r["seconds"], "cpu": r["cpu_s"] / r["messages"], "loop": None,
                "cores": r["cpu_s"] / r["seconds"], "client": None, "rss": r["rss_mb"], "lead": None}  # fmt: skip
    played = r["played_messages"]
    return {"messages": played / r["seconds"], "cpu": r["server_cpu_s"] / played,
            "loop": r["server_loop_cpu_s"] / played, "cores": r["server_cpu_s"] / r["seconds"],
            "client": r["client_cpu_s"] / played, "rss": r["server_rss_mb"], "lead": r["lead_s"]}  # fmt: skip


def cells(f: dict[str, float | None]) -> list[str]:
    def us(x: float | None) -> str:
        return "-" if x is None else f"{x * 1e6:.1f}"

    messages = "-" if f["messages"] is None else f"{f['messages']:,.0f}"
    lead = "-" if f["lead"] is None else f"{f['lead']:.2f}"
    return [messages, us(f["cpu"]), us(f["loop"]), f"{f['cores']:.2f}", us(f["client"]), f"{f['rss']:.0f}", lead]


def row(phase: str, r: dict[str, Any]) -> str:
    shown = cells(figures(phase, r))
    return (
        f"| {r['run']} | {phase} | {r['events_per_s']:,.0f} | {shown[0]} | {r['ratio']:.2f} | {' | '.join(shown[1:])} |"
    )


def print_summary(runs: dict[str, list[dict[str, Any]]], phases: list[str], plan: dict[str, Any]) -> None:
    print(f"\nEvery run: {plan['events']:,} events in the window ({plan.get('tickers', 0):,} of them tickers)"
          + (f", {plan['messages']:,} notifications to each client" if "messages" in plan else "")
          + f". Medians of {len(runs['read'])}:\n")  # fmt: skip
    header = COLUMNS.replace("| run ", "", 1)
    print(header)
    print(separator(header))
    for phase in phases:
        rs = runs[phase]
        each = [figures(phase, r) for r in rs]
        median = {k: None if each[0][k] is None else statistics.median(f[k] for f in each) for k in each[0]}
        events = statistics.median(r["events_per_s"] for r in rs)
        ratio = statistics.median(r["ratio"] for r in rs)
        shown = cells(median)
        print(f"| {phase} | {events:,.0f} | {shown[0]} | **{ratio:.2f}** | {' | '.join(shown[1:])} |")
    if "finished" in plan:
        print(f"\nThe server's last word (the last replay run): {plan['finished']}")


if __name__ == "__main__":
    main()
