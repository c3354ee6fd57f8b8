"""The archive and the history: archive throughput against a bare consume, the book at T over one
simulated day, and Parquet bytes per update against the JSON the topic holds.

    python benchmarks/archive.py [--messages 2000000] [--day-messages 20000000] [--instruments 1100]
                                 [--samples 50] [--repeat 2] [--parts 1,2,3] [--data-dir DIR] [--reuse-day]

A quick run: ``python benchmarks/archive.py --messages 100000 --day-messages 300000 --samples 10``.

Every record is what capture writes: built with the record codec's encoders
(``optionstream_pipeline.records.book``), the level arrays spliced in as raw bytes as capture does, keyed
by instrument, with the exchange timestamp as the Kafka timestamp (a marker's: capture's clock). The
simulated market: ``--instruments`` options (11 expiries, strikes around 100,000, calls and puts), a
top-heavy 15-level grid per side, changes of one to four levels, snapshots at each capture session's
start (three sessions a day, the old one ending with ``disconnect`` markers), and a few ``gap`` markers,
each followed by a resync snapshot.

1. **Archive against a bare consume** (the embedded Tansu broker, a 12-partition topic produced once):
   each phase in a fresh subprocess, the same partitions read to their end:

   - ``raw``: a bare confluent-kafka consumer (assign, ``consume``, touch each value; no decode): the
     floor of reading the topic at all;
   - ``reader``: the shared ``TopicReader`` (the one the archive reads with) to the end of every
     partition, records decoded: **the baseline**, so that the ratio is what archiving adds on top
     of reading;
   - ``reader-each``: the same reader as ``archive_topic`` uses it: one partition after the other, a
     reader (consumer) each, a commit at each end: what the archive's read pattern alone costs;
   - ``archive``: ``archive_topic`` into a fresh directory: read, explode, sort, Parquet, checkpoints,
     compaction, consumer-group commit.

   Orders alternate across ``--repeat``; then one more archive run, instrumented (the engine's calls
   wrapped with timers, time counted where it is spent, nested calls subtracted), says where the time
   goes. It is left out of the ratios.

2. **The book at T over one simulated day**: ``--day-messages`` records over 24 hours of book time,
   no Kafka: ``TopicRecord``s built in memory (values encoded, then decoded with the codec as the
   reader does), partitioned as librdkafka's ``murmur2_random`` would, and written through the
   archive's own calls exactly as ``PartitionArchiver`` does, one simulated archive run per partition
   every ``--run-minutes`` of the stream: ``book_times``, ``explode``, ``ArchiveStore.write`` (a file per
   hour of ``book_time``, at most ``max_records_per_file`` records), then ``compact_partition`` and
   ``build_checkpoints``. The day is kept in ``--data-dir`` (``--reuse-day`` skips generating it again).
   Then ``open_archive`` and, at ``--samples`` random T: the whole chain at depth 10 (``books_at``),
   one expiry (``chain_at``), one instrument at depth 10 (``book_at``), p50 and p99. Baselines in the
   same run: reading the rows the query needs without rebuilding books (``count(*)`` over
   ``book_records_at``: the floor of any answer), and the same queries on a copy of the archive without
   ``checkpoints/`` (at ``--baseline-samples`` of the same T: without checkpoints every row since the
   day's start is read).

3. **Parquet bytes per update**: bytes of ``book/`` and ``checkpoints/`` per record and per row against
   the JSON bytes of the same records (the Kafka values), for the day of part 2 and the topic of part 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from optionstream_pipeline.records.book import (
    encode_capture_meta,
    encode_change,
    encode_gap,
    encode_marker,
    encode_snapshot,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

PARTITIONS = 12
TOPIC = "bench-archive"
DAY = datetime(2026, 12, 2, tzinfo=UTC)  # the simulated day (its instruments expire after it)
MS_PER_HOUR = 3_600_000
SESSION_HOURS = (0, 8, 16)  # a capture session starts at each (the previous one ends with markers)
GAP_RATE = 2e-5  # gaps per change: each a gap marker, then a resync snapshot
GRID = 15  # price levels per side an instrument's book moves on
# Batched like the capture benchmark (linger 5 ms): the same bytes in the topic, produced faster.
PRODUCER_SETTINGS = {"batch_size": 1000, "batch_timeout_ms": 5, "compression_type": "snappy"}


# -- the simulated market: records as capture writes them ----------------------------------------


def murmur2_partition(key: bytes, partitions: int) -> int:
    """librdkafka's ``murmur2_random`` partitioner (the Java client's murmur2) for a non-empty key."""
    m, length = 0x5BD1E995, len(key)
    h = 0x9747B28C ^ length
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length - length % 4
    extra = length % 4
    if extra == 3:
        h ^= key[tail + 2] << 16
    if extra >= 2:
        h ^= key[tail + 1] << 8
    if extra >= 1:
        h ^= key[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def instrument_names(count: int) -> list[str]:
    """``count`` BTC option names: 11 expiries, strikes 2,000 apart around 100,000, calls and puts."""
    from optionstream_pipeline.deribit.instruments import format_option_name

    expiries = [DAY.date() + timedelta(days=d) for d in (1, 2, 3, 9, 16, 23, 30, 58, 86, 121, 212)]
    per_expiry = -(-count // (2 * len(expiries)))
    strikes = [100_000 + 2_000 * (k - per_expiry // 2) for k in range(per_expiry)]
    names = [format_option_name("BTC", e, s, t) for e in expiries for s in strikes for t in ("call", "put")]
    return names[:count]


class _Book:
    __slots__ = ("amounts", "capture", "change_id", "connection", "grid", "name", "timestamp_ms")

    def __init__(self, name: str, mid: float, tick: float, connection: int, rng: random.Random) -> None:
        self.name = name
        self.connection = connection
        # grid[0]: bids best first, grid[1]: asks best first, as Deribit's JSON numbers
        self.grid = (
            [_price_text(mid - tick * (k + 1)) for k in range(GRID)],
            [_price_text(mid + tick * (k + 1)) for k in range(GRID)],
        )
        self.amounts: tuple[list[bytes | None], list[bytes | None]] = (
            [_amount(rng) if k < 10 else None for k in range(GRID)],
            [_amount(rng) if k < 10 else None for k in range(GRID)],
        )
        self.change_id = 0
        self.timestamp_ms = 0
        self.capture = b""


def _price_text(price: float) -> bytes:
    return repr(round(max(price, 0.0001), 4)).encode()


# Drawn by index from pre-made, skewed tables: the generator's cost is mostly random numbers.
_AMOUNTS = [f"{min(a, b) / 10:.1f}".encode() for a in range(1, 3000, 7) for b in range(1, 3000, 7)]
_POSITIONS = [min(a, b) for a in range(GRID) for b in range(GRID)]  # near the top of the book more often
_LEVEL_COUNTS = (1, 1, 2, 2, 2, 3, 3, 4, 5)  # levels in a change: 1 to 5, about 2.5


def _amount(rng: random.Random) -> bytes:
    return _AMOUNTS[int(rng.random() * len(_AMOUNTS))]


class Market:
    """A day of book records for ``instruments`` options: ``events(start_ms, end_ms, count)`` yields
    ``(key, kafka_timestamp_ms, value, rows)`` in stream order, ``rows`` the archive rows it becomes."""

    def __init__(self, instruments: int, seed: int = 7) -> None:
        from optionstream_pipeline.deribit.instruments import parse_option_name

        self.rng = random.Random(seed)
        self.names = instrument_names(instruments)
        self.books: list[_Book] = []
        weights = []
        for index, name in enumerate(self.names):
            option = parse_option_name(name)
            moneyness = (100_000 - option.strike) / 100_000 * (1 if option.option_type == "call" else -1)
            days = (option.expiry - DAY.date()).days
            mid = max(0.01, max(moneyness, 0) + 0.08 * (days / 365) ** 0.5 * 2.718 ** (-abs(moneyness) * 8))
            tick = 0.0005  # every grid price is on Deribit's tick grid (0.0005, and 0.0001 below 0.005)
            self.books.append(_Book(name, round(round(mid / tick) * tick, 4), tick, index // 250, self.rng))
            # busier near the money and at the nearest expiries
            weights.append(1 / (1 + abs(moneyness) * 20) / (1 + index // 100 * 0.2))
        self.cumulative = list(_accumulate(weights))
        self.next_change_id = 33_195_890_000
        self.session = 0
        self.session_raw: dict[int | None, msgspec.Raw] = {}
        self.sessions_started: set[int] = set()

    # -- records ---------------------------------------------------------------------------------

    def _start_session(self, at_ms: int) -> Iterator[tuple[str, int, bytes, int]]:
        if self.session_raw:  # the running session stops: a disconnect marker per instrument
            stop_raw = self.session_raw[None]
            for book in self.books:
                local_us = at_ms * 1000 + self.rng.randrange(1000)
                value = encode_marker("disconnect", book.name, "100ms", local_us, "capture stopped", stop_raw)
                yield book.name, local_us // 1000, value, 1
        self.session += 1
        capture_id = zlib.crc32(f"session-{self.session}".encode()).to_bytes(4, "big").hex() + "c0ffee00"
        self.session_raw = {c: encode_capture_meta(capture_id, c) for c in range(5)}
        self.session_raw[None] = encode_capture_meta(capture_id)
        for book in self.books:  # each subscription's snapshot, the time of the book's last change
            at_ms += self.rng.randrange(2)
            yield self._snapshot(book, at_ms + 2000, "subscribe")

    def _snapshot(self, book: _Book, now_ms: int, reason: str) -> tuple[str, int, bytes, int]:
        sides = []
        for grid, amounts in zip(book.grid, book.amounts, strict=True):
            alive = [b'["new",%s,%s]' % (p, a) for p, a in zip(grid, amounts, strict=True) if a]
            sides.append(b"[" + b",".join(alive) + b"]")
        self.next_change_id += 1
        book.change_id = self.next_change_id
        exchange_ms = book.timestamp_ms or now_ms - 1000  # a snapshot carries its book's last change time
        raw = self.session_raw[book.connection]
        local_us = now_ms * 1000 + self.rng.randrange(1000, 20000)
        value = encode_snapshot(book.name, "100ms", exchange_ms, local_us, book.change_id,
                                msgspec.Raw(sides[0]), msgspec.Raw(sides[1]), raw, reason)  # fmt: skip
        rows = max(1, sum(1 for side in book.amounts for a in side if a))
        return book.name, exchange_ms, value, rows

    def _change(self, book: _Book, now_ms: int) -> tuple[str, int, bytes, int]:
        random_ = self.rng.random
        touched: set[tuple[int, int]] = set()
        levels: tuple[list[bytes], list[bytes]] = ([], [])
        for _ in range(_LEVEL_COUNTS[int(random_() * len(_LEVEL_COUNTS))]):
            side, position = int(random_() * 2), _POSITIONS[int(random_() * len(_POSITIONS))]
            if (side, position) in touched:
                continue
            touched.add((side, position))
            amounts = book.amounts[side]
            if amounts[position] is None:
                action, amount = b"new", _amount(self.rng)
            elif random_() < 0.15:
                action, amount = b"delete", b"0.0"
            else:
                action, amount = b"change", _amount(self.rng)
            amounts[position] = None if action == b"delete" else amount
            levels[side].append(b'["%s",%s,%s]' % (action, book.grid[side][position], amount))
        self.next_change_id += 1
        previous, book.change_id, book.timestamp_ms = book.change_id, self.next_change_id, now_ms
        local_us = now_ms * 1000 + 1000 + int(random_() * 19000)
        value = encode_change(book.name, "100ms", now_ms, local_us, book.change_id, previous,
                              msgspec.Raw(b"[" + b",".join(levels[0]) + b"]"),
                              msgspec.Raw(b"[" + b",".join(levels[1]) + b"]"),
                              self.session_raw[book.connection])  # fmt: skip
        return book.name, now_ms, value, len(touched)

    def _gap(self, book: _Book, now_ms: int) -> Iterator[tuple[str, int, bytes, int]]:
        self.next_change_id += 2
        local_us = now_ms * 1000 + self.rng.randrange(1000, 20000)
        value = encode_gap(book.name, "100ms", now_ms, local_us, self.next_change_id, self.next_change_id - 1,
                           book.change_id, self.session_raw[book.connection])  # fmt: skip
        book.timestamp_ms = now_ms
        yield book.name, now_ms, value, 1
        yield self._snapshot(book, now_ms + 150, "resync")

    def events(self, start_ms: int, end_ms: int, count: int) -> Iterator[tuple[str, int, bytes, int]]:
        """``count`` changes (and the session starts and gaps due) with times in ``[start_ms, end_ms)``."""
        for hour in SESSION_HOURS:
            at_ms = int(DAY.timestamp() * 1000) + hour * MS_PER_HOUR
            if start_ms <= at_ms < end_ms and hour not in self.sessions_started:
                self.sessions_started.add(hour)
                yield from self._start_session(at_ms)
        rng, books, cumulative = self.rng, self.books, self.cumulative
        total = cumulative[-1]
        span, random_ = end_ms - start_ms, rng.random
        times = sorted(start_ms + int(random_() * span) for _ in range(count))
        picks = rng.choices(range(len(books)), cum_weights=cumulative, k=count) if total else []
        for now_ms, index in zip(times, picks, strict=True):
            book = books[index]
            if random_() < GAP_RATE:
                yield from self._gap(book, now_ms)
            else:
                yield self._change(book, now_ms)


def _accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


# -- measuring -----------------------------------------------------------------------------------


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def tree_bytes(path: Path, pattern: str = "*.parquet") -> tuple[int, int]:
    """Total bytes and count of the files under ``path`` matching ``pattern``."""
    sizes = [p.stat().st_size for p in path.rglob(pattern)] if path.exists() else []
    return sum(sizes), len(sizes)


class Timers:
    """Exclusive wall time per call path: each wrapped call's time, less its wrapped callees'."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [path, nested time]

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)
        timers = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            path = f"{timers._stack[-1][0]} > {label}" if timers._stack else label
            timers._stack.append([path, 0.0])
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - began
                _, nested = timers._stack.pop()
                timers.totals[path] += elapsed - nested
                timers.calls[path] += 1
                if timers._stack:
                    timers._stack[-1][1] += elapsed

        setattr(owner, attribute, timed)


def instrument_archive() -> Timers:
    """Wrap the archive's calls where it looks them up (nothing in the product changes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optionstream_pipeline.archive import checkpoints, partition, storage, store
    from optionstream_pipeline.kafka.reader import TopicReader

    timers = Timers()
    timers.wrap(TopicReader, "poll", "Kafka fetch + decode (TopicReader.poll)")
    timers.wrap(partition, "book_times", "book_times")
    timers.wrap(partition, "explode", "explode")
    timers.wrap(pa, "concat_tables", "concat_tables")
    timers.wrap(store.ArchiveStore, "write", "ArchiveStore.write")
    timers.wrap(store.ArchiveStore, "read", "ArchiveStore.read")
    timers.wrap(store.ArchiveStore, "write_checkpoint", "write_checkpoint")
    timers.wrap(store.ArchiveStore, "file_state", "file_state (footer)")
    timers.wrap(store.ArchiveStore, "live_files", "live_files (glob)")
    timers.wrap(store, "sorted_rows", "sorted_rows")
    timers.wrap(store, "session_ends", "session_ends")
    timers.wrap(pq, "write_table", "parquet write (zstd)")
    timers.wrap(storage.LocalStorage, "put", "put in place (write, fsync, rename)")
    timers.wrap(partition, "compact_partition", "compact_partition")
    timers.wrap(partition, "build_checkpoints", "build_checkpoints")
    timers.wrap(checkpoints, "derive_checkpoint", "derive_checkpoint (DuckDB)")
    return timers


# -- part 1: the phases, each in its own process ------------------------------------------------


def phase_raw(bootstrap: str, topic: str, partitions: list[int]) -> dict[str, Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{os.getpid()}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "fetch.wait.max.ms": 20, "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    messages = value_bytes = 0
    ended: set[int] = set()
    while len(ended) < len(partitions):
        for message in consumer.consume(1000, timeout=0.1):
            error = message.error()
            if error is None:
                messages += 1
                value_bytes += len(message.value())
                ended.discard(message.partition())
            elif error.code() == KafkaError._PARTITION_EOF:
                ended.add(message.partition())
    consumer.close()
    return {"messages": messages, "value_bytes": value_bytes}


def phase_reader(bootstrap: str, topic: str, partitions: list[int]) -> dict[str, Any]:
    from optionstream_pipeline.kafka.reader import BEGINNING, TopicReader

    messages = 0
    with TopicReader(bootstrap, topic, dict.fromkeys(partitions, BEGINNING)) as reader:
        for batch in reader.batches_to_end(600):
            messages += len(batch)
    return {"messages": messages}


def phase_reader_each(bootstrap: str, topic: str, partitions: list[int]) -> dict[str, Any]:
    """As ``archive_topic`` reads: one partition after the other, a reader each (same group, commit)."""
    from optionstream_pipeline.kafka.reader import BEGINNING, TopicReader

    messages = 0
    for partition in partitions:
        with TopicReader(bootstrap, topic, {partition: BEGINNING}, group_id="bench-reader-each") as reader:
            last = None
            for batch in reader.batches_to_end(600):
                messages += len(batch)
                last = batch[-1].offset
            if last is not None:
                reader.commit({partition: last + 1})
    return {"messages": messages}


def phase_archive(bootstrap: str, topic: str, partitions: list[int], out: str, profile: bool) -> dict[str, Any]:
    from optionstream_pipeline.archive.run import archive_topic
    from optionstream_pipeline.config import settings_from_mapping

    timers = instrument_archive() if profile else None
    settings = settings_from_mapping({"kafka": {"brokers": [bootstrap], "topic": topic}, "archive": {"path": out}})
    reports = archive_topic(settings, partitions)
    result = {
        "messages": sum(r.records for r in reports),
        "rows": sum(r.rows for r in reports),
        "files": sum(len(r.files) for r in reports),
        "compacted": sum(r.compacted for r in reports),
        "checkpoints": sum(r.checkpoints for r in reports),
    }
    if timers is not None:
        result["profile"] = dict(timers.totals)
        result["profile_calls"] = dict(timers.calls)
    return result


def run_phase(args: argparse.Namespace) -> None:
    partitions = [int(p) for p in args.phase_partitions.split(",")]
    began_cpu, began = cpu_s(), time.perf_counter()
    if args.phase == "raw":
        result = phase_raw(args.bootstrap, TOPIC, partitions)
    elif args.phase == "reader":
        result = phase_reader(args.bootstrap, TOPIC, partitions)
    elif args.phase == "reader-each":
        result = phase_reader_each(args.bootstrap, TOPIC, partitions)
    else:
        result = phase_archive(args.bootstrap, TOPIC, partitions, args.phase_out, args.phase == "archive-profile")
    result["seconds"] = time.perf_counter() - began
    result["cpu_s"] = cpu_s() - began_cpu
    result["rss_mb"] = rss_mb()
    print(json.dumps(result))


def spawn_phase(phase: str, bootstrap: str, partitions: list[int], out: Path | None = None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--phase", phase, "--bootstrap", bootstrap,
               "--phase-partitions", ",".join(map(str, partitions)), "--phase-out", str(out or "")]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def produce_topic(bootstrap: str, instruments: int, messages: int, hours: int) -> dict[str, Any]:
    """The part-1 topic: ``messages`` records over ``hours`` hours of the simulated day."""
    from confluent_kafka import Producer

    from optionstream_pipeline.config import settings_from_mapping
    from optionstream_pipeline.kafka.admin import ensure_topic
    from optionstream_pipeline.kafka.producer import producer_config

    settings = settings_from_mapping(
        {"kafka": {"brokers": [bootstrap], "topic": TOPIC, "partitions": PARTITIONS, **PRODUCER_SETTINGS}}
    )
    config = producer_config(settings.kafka)
    ensure_topic(config, TOPIC, PARTITIONS, 1)
    failures: list[str] = []
    config["on_delivery"] = lambda err, msg: failures.append(str(err)) if err is not None else None
    producer = Producer(config)
    market = Market(instruments)
    start_ms = int(DAY.timestamp() * 1000)
    produced = rows = value_bytes = 0
    began = time.perf_counter()
    per_hour = messages // hours
    for hour in range(hours):
        count = per_hour if hour < hours - 1 else messages - per_hour * (hours - 1)
        for key, timestamp_ms, value, record_rows in market.events(
            start_ms + hour * MS_PER_HOUR, start_ms + (hour + 1) * MS_PER_HOUR, count
        ):
            while True:
                try:
                    producer.produce(TOPIC, value, key, timestamp=timestamp_ms)
                    break
                except BufferError:
                    producer.poll(0.05)
            produced += 1
            rows += record_rows
            value_bytes += len(value)
            if produced % 200_000 == 0:
                producer.poll(0)
                print(f"  produced {produced:,} ({produced / (time.perf_counter() - began):,.0f}/s)", flush=True)
    producer.flush(120)
    if failures:
        raise RuntimeError(f"{len(failures)} records not delivered, e.g. {failures[0]}")
    return {"messages": produced, "rows": rows, "value_bytes": value_bytes,
            "seconds": time.perf_counter() - began}  # fmt: skip


def part_archive_throughput(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    from optionstream_pipeline.kafka.broker import EmbeddedBroker

    partitions = list(range(PARTITIONS))
    work = Path(tempfile.mkdtemp(prefix="optionstream-bench-archive-"))
    print(f"\n# 1. archive vs bare consume: {args.messages:,} records, {args.instruments} instruments, "
          f"{PARTITIONS} partitions, over {args.hours} h of book time, {os.cpu_count()} cores", flush=True)  # fmt: skip
    try:
        with EmbeddedBroker() as broker:
            topic = produce_topic(broker.bootstrap, args.instruments, args.messages, args.hours)
            print(f"  topic: {topic['messages']:,} records, {topic['rows']:,} rows, "
                  f"{topic['value_bytes'] / topic['messages']:.0f} JSON bytes/record, "
                  f"produced in {topic['seconds']:.0f} s", flush=True)  # fmt: skip
            runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
            print("\n| run | phase | records | records/s | rows/s | CPU µs/record | RSS MB | / reader |")
            print("|---|---|---|---|---|---|---|---|")
            for repetition in range(args.repeat):
                order = ["raw", "reader", "reader-each", "archive"]
                order = order if repetition % 2 == 0 else order[::-1]
                results = {}
                for phase in order:
                    out = work / f"archive-{repetition}"
                    results[phase] = result = spawn_phase(phase, broker.bootstrap, partitions, out)
                    if phase == "archive":
                        result["book_bytes"] = tree_bytes(out / "book")
                        result["checkpoint_bytes"] = tree_bytes(out / "checkpoints")
                        shutil.rmtree(out, ignore_errors=True)
                    if result["messages"] != topic["messages"]:
                        raise RuntimeError(f"{phase} read {result['messages']:,} of {topic['messages']:,} records")
                    runs[phase].append(result)
                for phase in ("raw", "reader", "reader-each", "archive"):
                    r = results[phase]
                    ratio = results["reader"]["seconds"] / r["seconds"]
                    print(f"| {repetition + 1} | {phase} | {r['messages']:,} | {r['messages'] / r['seconds']:,.0f} | "
                          f"{topic['rows'] / r['seconds']:,.0f} | {r['cpu_s'] / r['messages'] * 1e6:.1f} | "
                          f"{r['rss_mb']:.0f} | {ratio:.2f} |", flush=True)  # fmt: skip
            print("  profiling one more archive run ...", flush=True)
            profile = spawn_phase("archive-profile", broker.bootstrap, partitions, work / "archive-profile")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["part1"] = {"topic": topic, "runs": runs, "profile": profile}
    print_profile(profile, topic)


def print_profile(profile: dict[str, Any], topic: dict[str, Any]) -> None:
    total = profile["seconds"]
    print(f"\nWhere the instrumented archive run's {total:.1f} s went ({profile['messages'] / total:,.0f} records/s "
          f"with the timers on); exclusive time, nested calls subtracted:\n")  # fmt: skip
    print("| call path | calls | seconds | share | µs/record |")
    print("|---|---|---|---|---|")
    counted = 0.0
    for path, seconds in sorted(profile["profile"].items(), key=lambda item: -item[1]):
        counted += seconds
        print(f"| {path} | {profile['profile_calls'][path]:,} | {seconds:.2f} | {seconds / total:.0%} | "
              f"{seconds / topic['messages'] * 1e6:.2f} |")  # fmt: skip
    rest = total - counted
    print(f"| (the rest: chunking loop, process start, connections, commit) | | {rest:.2f} | {rest / total:.0%} | "
          f"{rest / topic['messages'] * 1e6:.2f} |")  # fmt: skip


# -- part 2: one simulated day through the archive's own writer ----------------------------------


def write_day(args: argparse.Namespace, root: Path, hours: int = 24) -> dict[str, Any]:
    """Generate the day (its first ``hours`` hours: ``args.day_messages`` records over them) and write it
    as the archive does, one simulated run per partition per window (``benchmarks/replay.py`` too)."""
    from optionstream_pipeline.archive.checkpoints import build_checkpoints
    from optionstream_pipeline.archive.compaction import compact_partition
    from optionstream_pipeline.archive.layout import ArchiveFile, hour_of
    from optionstream_pipeline.archive.progress import Fingerprint
    from optionstream_pipeline.archive.schema import book_times, explode
    from optionstream_pipeline.archive.store import ArchiveStore, FileState
    from optionstream_pipeline.config import ArchiveSettings
    from optionstream_pipeline.kafka.reader import TopicRecord
    from optionstream_pipeline.records.book import decode_record

    settings = ArchiveSettings(path=str(root))
    store = ArchiveStore(root, settings.row_group_rows)
    market = Market(args.instruments, seed=11)
    partition_of = {name: murmur2_partition(name.encode(), PARTITIONS) for name in market.names}
    next_offset = [0] * PARTITIONS
    book_time = [0] * PARTITIONS
    spent: dict[str, float] = defaultdict(float)
    messages = rows = value_bytes = files = merged = checkpoints = 0
    window_ms = args.run_minutes * 60_000
    windows = hours * MS_PER_HOUR // window_ms
    per_window = args.day_messages // windows
    start_ms = int(DAY.timestamp() * 1000)
    began = time.perf_counter()

    for window in range(windows):
        t0 = time.perf_counter()
        count = per_window if window < windows - 1 else args.day_messages - per_window * (windows - 1)
        window_start = start_ms + window * window_ms
        events = list(market.events(window_start, window_start + window_ms, count))
        t1 = time.perf_counter()
        by_partition: list[list[TopicRecord]] = [[] for _ in range(PARTITIONS)]
        for key, timestamp_ms, value, _ in events:
            partition = partition_of[key]
            offset = next_offset[partition]
            next_offset[partition] = offset + 1
            by_partition[partition].append(
                TopicRecord(partition, offset, timestamp_ms, key, value, decode_record(value))
            )
            value_bytes += len(value)
        messages += len(events)
        t2 = time.perf_counter()
        spent["generate (market + encode)"] += t1 - t0
        spent["decode into TopicRecords"] += t2 - t1
        del events
        for partition, records in enumerate(by_partition):
            if not records:
                continue
            with store.partition_lock(TOPIC, partition):
                # One archive run of this partition (PartitionArchiver._archive / _flush, without Kafka).
                t0 = time.perf_counter()
                times = book_times(records, book_time[partition])
                spent["book_times"] += time.perf_counter() - t0
                start = 0
                while start < len(records):
                    hour = hour_of(times[start])
                    stop = start
                    while (stop < len(records) and stop - start < settings.max_records_per_file
                           and hour_of(times[stop]) == hour):  # fmt: skip
                        stop += 1
                    chunk, chunk_times = records[start:stop], times[start:stop]
                    t0 = time.perf_counter()
                    table = explode(chunk, chunk_times, 0)
                    t1 = time.perf_counter()
                    file = ArchiveFile(TOPIC, partition, 0, chunk[0].offset, chunk[-1].offset, hour)
                    store.write(file, table, FileState(chunk_times[-1], Fingerprint.of(chunk[-1])))
                    spent["explode"] += t1 - t0
                    spent["ArchiveStore.write (sort, Parquet, fsync)"] += time.perf_counter() - t1
                    rows += table.num_rows
                    files += 1
                    start = stop
                book_time[partition] = times[-1]
                t0 = time.perf_counter()
                merges = compact_partition(store, TOPIC, partition, settings.compacted_records_per_file)
                t1 = time.perf_counter()
                checkpoints += len(build_checkpoints(store, TOPIC, partition))
                spent["compact_partition"] += t1 - t0
                spent["build_checkpoints"] += time.perf_counter() - t1
                merged += sum(len(m.inputs) for m in merges)
        if (window + 1) % max(1, windows // hours) == 0:
            elapsed = time.perf_counter() - began
            print(f"  to {(window + 1) * window_ms / MS_PER_HOUR:>4.1f} h of the day: {messages:,} "
                  f"records, {rows:,} rows, {files:,} files written, {merged:,} merged, {checkpoints:,} checkpoints; "
                  f"{elapsed:.0f} s ({messages / elapsed:,.0f} records/s), RSS {rss_mb():.0f} MB",
                  flush=True)  # fmt: skip
    return {
        "instruments": args.instruments, "day_messages": args.day_messages, "run_minutes": args.run_minutes,
        "messages": messages, "rows": rows, "value_bytes": value_bytes, "files_written": files,
        "files_merged": merged, "checkpoints": checkpoints, "seconds": time.perf_counter() - began,
        "spent": dict(spent), "names": market.names, "version": 1,
    }  # fmt: skip


def day_archive(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    root = Path(args.data_dir) / "day"
    manifest_path = root / "manifest.json"
    wanted = {"instruments": args.instruments, "day_messages": args.day_messages, "run_minutes": args.run_minutes}
    if args.reuse_day and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if all(manifest.get(k) == v for k, v in wanted.items()):
            print(f"  reusing the day in {root} (generated in {manifest['seconds']:.0f} s)", flush=True)
            return root, manifest
        print(f"  {root} holds another day ({ {k: manifest.get(k) for k in wanted} }): generating again")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    manifest = write_day(args, root / "archive")
    manifest_path.write_text(json.dumps(manifest))
    return root, manifest


def time_query(connection: Any, sql: str, parameters: list[Any]) -> tuple[float, list[tuple]]:
    began = time.perf_counter()
    rows = connection.execute(sql, parameters).fetchall()
    return time.perf_counter() - began, rows


CHAIN_SQL = "SELECT symbol, reliable, why, bids[1:10] AS bids, asks[1:10] AS asks FROM books_at(?::TIMESTAMPTZ)"
EXPIRY_SQL = "SELECT * FROM chain_at(?::DATE, ?::TIMESTAMPTZ)"
BOOK_SQL = "SELECT * FROM book_at(?, ?::TIMESTAMPTZ, depth := 10)"
READ_ALL_SQL = "SELECT count(*) FROM book_records_at(?::TIMESTAMPTZ)"
READ_ONE_SQL = "SELECT count(*) FROM book_records_at(?::TIMESTAMPTZ, instrument := ?)"


def part_book_at(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    import duckdb

    from optionstream_pipeline.deribit.instruments import parse_option_name
    from optionstream_pipeline.query.database import open_archive

    print(f"\n# 2. the book at T over one simulated day: {args.day_messages:,} records, {args.instruments} "
          f"instruments, {PARTITIONS} partitions, an archive run per partition every {args.run_minutes} min, "
          f"duckdb {duckdb.__version__}", flush=True)  # fmt: skip
    root, manifest = day_archive(args)
    archive = root / "archive"
    book_bytes, book_files = tree_bytes(archive / "book")
    checkpoint_bytes, checkpoint_files = tree_bytes(archive / "checkpoints")
    print(f"  the day: {manifest['messages']:,} records, {manifest['rows']:,} rows; book/ {book_files} files "
          f"{book_bytes / 1e6:,.0f} MB, checkpoints/ {checkpoint_files} files {checkpoint_bytes / 1e6:,.1f} MB; "
          f"written in {manifest['seconds']:.0f} s", flush=True)  # fmt: skip
    if "spent" in manifest:
        print("  writing the day:", ", ".join(f"{k} {v:.0f} s" for k, v in manifest["spent"].items()))

    # The baseline archive: the same book/ files (hard links), no checkpoints/.
    bare = root / "no-checkpoints"
    if not (bare / "book").exists():
        shutil.rmtree(bare, ignore_errors=True)
        bare.mkdir()
        subprocess.run(["cp", "-al", str(archive / "book"), str(bare / "book")], check=True)
    (archive / "archive.duckdb").unlink(missing_ok=True)
    (bare / "archive.duckdb").unlink(missing_ok=True)

    rng = random.Random(args.seed)
    day_ms = 24 * MS_PER_HOUR
    moments = [DAY + timedelta(milliseconds=rng.randrange(60_000, day_ms - 60_000)) for _ in range(args.samples)]
    names = manifest["names"]
    instruments = [rng.choice(names) for _ in moments]
    expiries = [parse_option_name(name).expiry for name in instruments]

    connection = open_archive(archive)
    connection.execute(CHAIN_SQL, [moments[0]]).fetchall()  # warm: the views, the footers, the page cache
    timings: dict[str, list[float]] = defaultdict(list)
    answers: dict[str, list[int]] = defaultdict(list)
    kept: dict[tuple[str, int], list[tuple]] = {}  # answers of the first T, compared without checkpoints
    print("  sampling", end="", flush=True)
    for index, (moment, instrument, expiry) in enumerate(zip(moments, instruments, expiries, strict=True)):
        for label, sql, parameters in (
            ("books_at(T), the whole chain, depth 10", CHAIN_SQL, [moment]),
            ("book_at(instrument, T, depth := 10)", BOOK_SQL, [instrument, moment]),
            ("chain_at(expiry, T), one expiry", EXPIRY_SQL, [expiry, moment]),
            ("floor: count(*) of the rows books_at reads", READ_ALL_SQL, [moment]),
            ("floor: count(*) of the rows book_at reads", READ_ONE_SQL, [moment, instrument]),
            ("fixed part: the session_ends view (every file's footer)", "SELECT * FROM session_ends", []),
        ):
            seconds, rows = time_query(connection, sql, parameters)
            timings[label].append(seconds)
            answers[label].append(rows[0][0] if label.startswith("floor") else len(rows))  # a count, or rows
            if index < args.baseline_samples:
                kept[label, index] = sorted(rows, key=repr)
        print(".", end="", flush=True)
    print()
    connection.close()

    # Without checkpoints: every row since the day's start is read; a few of the same T.
    connection = open_archive(bare)
    baseline: dict[str, list[float]] = defaultdict(list)
    differ = []
    print("  without checkpoints", end="", flush=True)
    for index, (moment, instrument) in enumerate(zip(moments, instruments, strict=True)):
        if index >= args.baseline_samples:
            break
        for label, sql, parameters in (
            ("books_at(T), the whole chain, depth 10", CHAIN_SQL, [moment]),
            ("book_at(instrument, T, depth := 10)", BOOK_SQL, [instrument, moment]),
        ):
            seconds, rows = time_query(connection, sql, parameters)
            baseline[label].append(seconds)
            if sorted(rows, key=repr) != kept[label, index]:
                differ.append(f"{label} at {moment.isoformat()}")
        print(".", end="", flush=True)
    print()
    connection.close()
    compared = 2 * min(args.baseline_samples, len(moments))
    print(f"  answers with and without checkpoints: {compared - len(differ)} of {compared} the same"
          + "".join(f"\n  !! differs: {d}" for d in differ))  # fmt: skip

    targets = {"books_at(T), the whole chain, depth 10": 1.0, "book_at(instrument, T, depth := 10)": 0.1}
    print(f"\n{args.samples} random T in the day (seeded), after one warm-up query; p99 of 50 is the 50th value "
          f"(the slowest):\n")  # fmt: skip
    print("| query | p50 ms | p99 ms | max ms | rows answered (median) | target | no checkpoints: p50 ms "
          f"({args.baseline_samples} T) | speed-up |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    rows_out = []
    for label, values in timings.items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        target = targets.get(label)
        verdict = "-" if target is None else f"< {target * 1000:.0f} ms {'met' if p99 < target else 'MISSED'} at p99"
        base = baseline.get(label)
        base_p50 = percentile(base, 0.5) if base else None
        speedup = f"{base_p50 / percentile(values[: len(base)], 0.5):.0f}x" if base else "-"
        print(f"| {label} | {p50 * 1000:.0f} | {p99 * 1000:.0f} | {max(values) * 1000:.0f} | "
              f"{statistics.median(answers[label]):,.0f} | {verdict} | "
              f"{'-' if base_p50 is None else f'{base_p50 * 1000:,.0f}'} | {speedup} |")  # fmt: skip
        rows_out.append({"query": label, "p50_s": p50, "p99_s": p99, "max_s": max(values),
                         "baseline_p50_s": base_p50, "target_s": target})  # fmt: skip
    summary["part2"] = {"manifest": {k: v for k, v in manifest.items() if k != "names"}, "queries": rows_out,
                        "archive": str(archive),
                        "book_bytes": book_bytes, "book_files": book_files, "checkpoint_bytes": checkpoint_bytes,
                        "checkpoint_files": checkpoint_files, "answers_differ": differ}  # fmt: skip


# -- part 3 and the summary ----------------------------------------------------------------------


def column_bytes(directory: Path) -> dict[str, int]:
    """Compressed bytes per column over every Parquet file under ``directory`` (from the footers)."""
    import pyarrow.parquet as pq

    totals: dict[str, int] = defaultdict(int)
    for path in directory.rglob("*.parquet"):
        metadata = pq.read_metadata(path)
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for column in range(row_group.num_columns):
                chunk = row_group.column(column)
                totals[chunk.path_in_schema] += chunk.total_compressed_size
    return dict(totals)


def part_bytes(summary: dict[str, Any]) -> None:
    print("\n# 3. Parquet bytes per update against the JSON bytes of the same records\n")
    print("| data | records | rows | JSON B/record | book/ B/record | book/ B/row | checkpoints/ B/record | "
          "JSON / book/ | JSON / (book/ + checkpoints/) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    sources = []
    if "part2" in summary:
        p = summary["part2"]
        m = p["manifest"]
        sources.append(("part 2: the day", m["messages"], m["rows"], m["value_bytes"], p["book_bytes"],
                        p["checkpoint_bytes"]))  # fmt: skip
    if "part1" in summary:
        t, run = summary["part1"]["topic"], summary["part1"]["runs"]["archive"][0]
        sources.append(("part 1: the topic", t["messages"], t["rows"], t["value_bytes"], run["book_bytes"][0],
                        run["checkpoint_bytes"][0]))  # fmt: skip
    summary["part3"] = []
    for label, messages, rows, json_bytes, book, checkpoints in sources:
        print(f"| {label} | {messages:,} | {rows:,} | {json_bytes / messages:.1f} | {book / messages:.1f} | "
              f"{book / rows:.2f} | {checkpoints / messages:.2f} | {json_bytes / book:.1f}x | "
              f"{json_bytes / (book + checkpoints):.1f}x |")  # fmt: skip
        summary["part3"].append({"data": label, "json_per_record": json_bytes / messages,
                                 "book_per_record": book / messages, "ratio": json_bytes / book,
                                 "ratio_with_checkpoints": json_bytes / (book + checkpoints)})  # fmt: skip
    if "part2" in summary:
        columns = column_bytes(Path(summary["part2"]["archive"]) / "book")
        total, messages = sum(columns.values()), summary["part2"]["manifest"]["messages"]
        print("\nWhere the day's book/ bytes go (compressed column chunks, from the footers):\n")
        print("| column | MB | share | B/record |")
        print("|---|---|---|---|")
        for name, size in sorted(columns.items(), key=lambda item: -item[1]):
            print(f"| {name} | {size / 1e6:,.1f} | {size / total:.1%} | {size / messages:.2f} |")
        summary["part3_columns"] = columns


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Archive and history: summary (ratios are within this run)")
    for column in ("measure", "figure", "baseline (same run)", "ratio", "target", "met"):
        table.add_column(column)
    if "part1" in summary:
        runs = summary["part1"]["runs"]
        rows = summary["part1"]["topic"]["rows"]
        archive = statistics.median(rows / r["seconds"] for r in runs["archive"])
        reader = statistics.median(rows / r["seconds"] for r in runs["reader"])
        raw = statistics.median(rows / r["seconds"] for r in runs["raw"])
        pairs = zip(runs["archive"], runs["reader"], strict=True)
        ratio = statistics.median(b["seconds"] / a["seconds"] for a, b in pairs)
        table.add_row("archive rows/s (median)", f"{archive:,.0f}", f"TopicReader {reader:,.0f}", f"{ratio:.2f}",
                      ">= 0.5", "yes" if ratio >= 0.5 else "NO")  # fmt: skip
        each = statistics.median(rows / r["seconds"] for r in runs["reader-each"])
        table.add_row("", "", f"TopicReader per partition {each:,.0f}", f"{archive / each:.2f}", "", "")
        table.add_row("", "", f"raw consumer {raw:,.0f}", f"{archive / raw:.2f}", "", "")
    if "part2" in summary:
        for q in summary["part2"]["queries"]:
            target = q["target_s"]
            base = q["baseline_p50_s"]
            table.add_row(
                f"{q['query']} p50 / p99",
                f"{q['p50_s'] * 1000:,.0f} / {q['p99_s'] * 1000:,.0f} ms",
                "-" if base is None else f"no checkpoints p50 {base * 1000:,.0f} ms",
                "-" if base is None else f"{base / q['p50_s']:.0f}x faster",
                "-" if target is None else f"p99 < {target * 1000:.0f} ms",
                "-" if target is None else ("yes" if q["p99_s"] < target else "NO"),
            )
    for b in summary.get("part3", []):
        table.add_row(f"bytes/record, {b['data']}", f"{b['book_per_record']:.1f} B Parquet",
                      f"{b['json_per_record']:.0f} B JSON", f"{b['ratio']:.1f}x smaller "
                      f"({b['ratio_with_checkpoints']:.1f}x with checkpoints)", ">= 8x",
                      "yes" if b["ratio"] >= 8 else "NO")  # fmt: skip
    print()
    Console(width=160).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2_000_000, help="part 1: records in the topic")
    parser.add_argument("--hours", type=int, default=2, help="part 1: hours of book time the topic spans")
    parser.add_argument("--repeat", type=int, default=2, help="part 1: repetitions, order alternating")
    parser.add_argument("--day-messages", type=int, default=20_000_000, help="part 2: records in the day")
    parser.add_argument("--run-minutes", type=int, default=5, help="part 2: an archive run every N minutes")
    parser.add_argument("--instruments", type=int, default=1100)
    parser.add_argument("--samples", type=int, default=50, help="part 2: random T")
    parser.add_argument("--baseline-samples", type=int, default=5, help="part 2: T without checkpoints")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--parts", default="1,2,3")
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "optionstream-bench-archive"))
    parser.add_argument("--reuse-day", action="store_true", help="part 2: use the day in --data-dir if it matches")
    parser.add_argument("--json", help="also write the figures to this file")
    phases = ["raw", "reader", "reader-each", "archive", "archive-profile"]
    parser.add_argument("--phase", choices=phases, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--phase-partitions", help=argparse.SUPPRESS)
    parser.add_argument("--phase-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return
    parts = {int(p) for p in args.parts.split(",")}
    summary: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "cores": os.cpu_count()}
    if 1 in parts:
        part_archive_throughput(args, summary)
    if 2 in parts:
        part_book_at(args, summary)
    if 3 in parts:
        part_bytes(summary)
    print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
