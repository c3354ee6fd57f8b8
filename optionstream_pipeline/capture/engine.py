"""The capture engine: every subscribed book, from Deribit into Kafka, through whatever happens.

A plain Python class (no Dagster): :meth:`CaptureEngine.run` serves until :meth:`request_stop`,
:meth:`stats` gives a consistent snapshot of the counters, and :meth:`set_instruments` changes the
followed universe at run time without reconnecting. :class:`EngineThread` runs it in a background
thread for synchronous callers (the Dagster op, tests).

The hot path is :meth:`CaptureEngine.on_book`: continuity check, record encoding and a
non-blocking produce, with no awaits, so the whole chain costs a few microseconds per message.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict
from typing import Any

import msgspec

from optionstream_pipeline.capture.connection import DeribitConnection
from optionstream_pipeline.capture.frames import BookData
from optionstream_pipeline.capture.metrics import serve_metrics
from optionstream_pipeline.capture.stats import CaptureStats, EngineCounters, collect_stats, rates
from optionstream_pipeline.capture.subscriptions import ENDED_STATES, SubscriptionTable, Verdict
from optionstream_pipeline.config import Settings
from optionstream_pipeline.kafka.admin import ensure_topic
from optionstream_pipeline.kafka.logs import RepeatFilter
from optionstream_pipeline.kafka.producer import RecordProducer, redacted
from optionstream_pipeline.records.book import (
    encode_capture_meta,
    encode_change,
    encode_gap,
    encode_marker,
    encode_snapshot,
)
from optionstream_pipeline.records.ticker import encode_ticker

log = logging.getLogger(__name__)
SOURCE_LOG = logging.getLogger(f"{__name__}.source")
SOURCE_LOG.addFilter(RepeatFilter())

POLL_INTERVAL_S = 0.1  # failures, statistics and the accounting: no report per delivered record to serve
CONNECTION_STOP_S = 10.0
BACKPRESSURE_POLL_S = 0.005
SOURCE_REFRESH_S = 5.0

InstrumentSource = Callable[[], Collection[str]]


def resolve_interval(settings: Settings) -> str:
    """``raw`` needs credentials; ``auto`` means raw when they are in the environment, else 100ms."""
    interval = settings.deribit.book_interval
    if interval == "auto":
        return "raw" if settings.deribit_credentials() else "100ms"
    return interval


def resolve_ticker_interval(settings: Settings) -> str | None:
    """The ticker channel captured, or ``None`` with ``deribit.tickers: false``.

    ``raw`` tickers without credentials are refused here: Deribit would refuse the whole subscribe
    request, and with it the books subscribed in the same request.
    """
    deribit = settings.deribit
    if not deribit.tickers:
        return None
    if deribit.ticker_interval == "raw" and not settings.deribit_credentials():
        raise ValueError(
            "deribit.ticker_interval: raw tickers need Deribit API credentials "
            f"(${deribit.client_id_env} and ${deribit.client_secret_env}); use 100ms, or set them"
        )
    return deribit.ticker_interval


class CaptureEngine:
    """Keeps a set of Deribit option books flowing into one Kafka topic."""

    def __init__(
        self,
        settings: Settings,
        instruments: Iterable[str] = (),
        instrument_source: InstrumentSource | None = None,
        source_refresh_s: float = SOURCE_REFRESH_S,
    ) -> None:
        self.settings = settings
        self.capture_id = uuid.uuid4().hex[:12]
        self._capture_raw = encode_capture_meta(self.capture_id)
        self.interval = resolve_interval(settings)
        self.ticker_interval = resolve_ticker_interval(settings)
        self._ticker_topic = settings.kafka.ticker_topic
        self.counters = EngineCounters()
        deribit = settings.deribit
        self.table = SubscriptionTable(deribit.channels_per_connection, deribit.max_connections)
        self.started_at = time.time()
        self._initial = set(instruments)
        self._source = instrument_source
        self._source_refresh_s = source_refresh_s
        self._connections: list[DeribitConnection] = []
        self._connection_tasks: list[asyncio.Task[None]] = []
        self._credentials = settings.deribit_credentials()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._stop_requested = False
        self._producer: RecordProducer | None = None
        self.ready = threading.Event()
        self.final_undelivered: int | None = None
        self.reading_paused = 0  # connections currently held by back-pressure
        self.metrics_port: int | None = None
        self.source_problem: str | None = None  # why the instrument source gave nothing, last time
        self._metrics_server: Any = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until :meth:`request_stop`; then close the connections and flush within the bound.

        Raises when capture cannot go on by itself (Kafka unreachable at start, a fatal producer
        error, a failed background task), after the same orderly shutdown, so a supervisor restarts it.
        """
        kafka = self.settings.kafka
        self._producer = RecordProducer(kafka, self.settings.kafka_secrets())
        log.info("kafka producer: %s", redacted(self._producer.client_config))
        background: list[asyncio.Task[Any]] = []
        try:
            topics = [kafka.topic] + ([kafka.ticker_topic] if self.ticker_interval else [])
            for topic in topics:  # the same partitions: an instrument's book and tickers share a partition number
                await asyncio.to_thread(
                    ensure_topic,
                    self._producer.client_config,
                    topic,
                    kafka.partitions,
                    kafka.replication_factor,
                    kafka.admin_timeout_s,
                )
            self._start_metrics()
            initial = self._initial
            self._apply_instruments(initial | await self._read_source())
            # Only now may other threads reach the loop: set_instruments() before this point
            # updated _initial, and a stop request is either seen here or delivered through the loop.
            self._loop = asyncio.get_running_loop()
            if self._stop_requested:
                self._stop.set()
            if self._initial is not initial:  # set_instruments() ran while we were starting
                self._apply_instruments(set(self._initial))
            background = [
                asyncio.create_task(self._poll_producer(), name="kafka-poll"),
                asyncio.create_task(self._log_stats(), name="stats-log"),
            ]
            if self._source is not None:
                background.append(asyncio.create_task(self._follow_source(), name="instrument-source"))
            self.ready.set()
            log.info(
                "capture %s: %d instruments over %d connections, %s books -> %s",
                self.capture_id,
                len(self.table),
                len(self._connections),
                self.interval,
                kafka.topic,
            )
            stop = asyncio.create_task(self._stop.wait(), name="stop")
            done, _ = await asyncio.wait([stop, *background], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            for task in done - {stop}:  # a background task ended: that is a failure
                task.result()
                raise RuntimeError(f"capture background task {task.get_name()} ended unexpectedly")
        finally:
            await self._shutdown(background)

    def _start_metrics(self) -> None:
        metrics = self.settings.capture.metrics
        if not metrics.enabled:
            return
        try:
            self._metrics_server, self.metrics_port = serve_metrics(metrics.host, metrics.port, self.stats)
        except OSError as exc:
            raise OSError(
                f"capture.metrics: cannot listen on {metrics.host}:{metrics.port} ({exc.strerror}); "
                "choose another port, 0 for a free one, or set capture.metrics.enabled: false"
            ) from exc

    def request_stop(self) -> None:
        """Thread-safe, and safe before :meth:`run` starts: ask :meth:`run` to finish."""
        self._stop_requested = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop.set)

    async def _shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        connections = asyncio.gather(
            *(connection.stop() for connection in self._connections), *self._connection_tasks, return_exceptions=True
        )
        try:
            await asyncio.wait_for(connections, CONNECTION_STOP_S)
        except TimeoutError:
            log.error("connections did not close within %.0f s; flushing anyway", CONNECTION_STOP_S)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        producer = self._producer
        if producer is not None:
            undelivered = await asyncio.to_thread(producer.close)
            self.final_undelivered = undelivered
            if undelivered:
                log.error("capture %s: %d records undelivered after the flush bound", self.capture_id, undelivered)
            elif producer.accounting.handed_over:
                log.info("capture %s: flushed; every record delivered", self.capture_id)
            else:
                log.info("capture %s: no record was produced", self.capture_id)

    # -- the universe -------------------------------------------------------------------------

    def set_instruments(self, instruments: Iterable[str]) -> None:
        """Thread-safe: follow exactly these instruments from now on (no reconnect needed)."""
        wanted = set(instruments)
        loop = self._loop
        if loop is None:
            self._initial = wanted
            return
        loop.call_soon_threadsafe(self._apply_instruments, wanted)

    @property
    def instruments(self) -> set[str]:
        """The instruments followed now."""
        return self.table.names()

    def _apply_instruments(self, wanted: set[str]) -> None:
        changes = self.table.follow(wanted)  # first: frames of removed books are dropped from here on
        for index, names in changes.removed.items():
            self._connections[index].unsubscribe(names)
            for name in names:
                self._emit_marker("unsubscribed", name, "left the universe")
        for index, names in changes.added.items():
            self._connection(index).subscribe(names)
        if changes:
            log.info(
                "universe: +%d -%d instruments, %d followed",
                sum(map(len, changes.added.values())),
                sum(map(len, changes.removed.values())),
                len(self.table),
            )

    def _connection(self, index: int) -> DeribitConnection:
        while index >= len(self._connections):
            position = len(self._connections)
            connection = DeribitConnection(
                position,
                self.settings.deribit,
                self.interval,
                self,
                self.table,
                self.capture_id,
                self._credentials,
                follow_instrument_state=position == 0,
                ticker_interval=self.ticker_interval,
            )
            self._connections.append(connection)
            self._connection_tasks.append(asyncio.create_task(connection.run(), name=f"deribit-{position}"))
        return self._connections[index]

    async def _follow_source(self) -> None:
        while True:
            await asyncio.sleep(self._source_refresh_s)
            wanted = await self._read_source()
            if wanted and wanted - self.table.expired != self.table.names():
                self._apply_instruments(wanted)

    async def _read_source(self) -> set[str]:
        """The source's universe; empty (ignored) when it fails or is empty, so capture keeps going.

        An empty universe is never applied: a bad listing or a missing file must not unsubscribe
        every book. To stop capturing, stop the capture. Each problem is a warning (said once, then
        counted: the source is read every few seconds), the ``source_failures`` counter and
        :attr:`source_problem`, which the status line shows.
        """
        if self._source is None:
            return set()
        try:
            wanted = set(await asyncio.to_thread(self._source))
        except Exception as exc:
            problem = f"instrument source failed ({exc})"
        else:
            if wanted:
                self.source_problem = None
                return wanted
            problem = "instrument source lists no instrument"
        self.source_problem = problem
        self.counters.source_failures += 1
        SOURCE_LOG.warning("%s; keeping the %d instruments followed", problem, len(self.table))
        return set()

    # -- the hot path (BookSink) --------------------------------------------------------------

    def on_book(self, data: BookData, local_timestamp_us: int, capture: msgspec.Raw) -> bool:
        counters = self.counters
        counters.messages_in += 1
        instrument = data.instrument_name
        verdict = self.table.on_book(instrument, data.change_id, data.prev_change_id, local_timestamp_us)
        if verdict is Verdict.CHANGE:
            value = encode_change(
                instrument,
                self.interval,
                data.timestamp,
                local_timestamp_us,
                data.change_id,
                data.prev_change_id,
                data.bids,
                data.asks,
                capture,
            )
        elif verdict is Verdict.SNAPSHOT:
            value = encode_snapshot(
                instrument,
                self.interval,
                data.timestamp,
                local_timestamp_us,
                data.change_id,
                data.bids,
                data.asks,
                capture,
                self.table.snapshot_reason,
            )
        elif verdict is Verdict.GAP:
            return self._on_gap(instrument, data, local_timestamp_us, capture)
        elif verdict is Verdict.DROP:
            counters.dropped_awaiting_snapshot += 1
            return True
        else:  # in flight while it was being unsubscribed
            counters.dropped_unfollowed += 1
            return True
        return self._producer.offer(instrument, value, data.timestamp)

    def _on_gap(self, instrument: str, data: BookData, local_us: int, capture: msgspec.Raw) -> bool:
        self.counters.gaps += 1
        self.counters.markers += 1
        gap = self.table.last_gap
        log.warning(
            "gap on %s: prev_change_id %s, expected %s; resyncing this instrument only",
            instrument,
            gap.prev_change_id,
            gap.expected_prev_change_id,
        )
        value = encode_gap(
            instrument,
            self.interval,
            data.timestamp,
            local_us,
            gap.change_id,
            gap.prev_change_id,
            gap.expected_prev_change_id,
            capture,
        )
        accepted = self._producer.offer(instrument, value, data.timestamp)
        self._connections[self.table.shard_of(instrument)].resync([instrument], "change_id gap")
        return accepted

    def on_ticker(
        self, instrument: str, timestamp_ms: int, data: msgspec.Raw, local_timestamp_us: int, capture: msgspec.Raw
    ) -> bool:
        """A ticker of a followed instrument becomes a record of the ticker topic, Deribit's object spliced in."""
        self.counters.tickers_in += 1
        if instrument not in self.table:
            self.counters.dropped_unfollowed += 1
            return True
        value = encode_ticker(instrument, self.ticker_interval, timestamp_ms, local_timestamp_us, data, capture)
        self.counters.tickers_out += 1
        return self._producer.offer(instrument, value, timestamp_ms, self._ticker_topic)

    async def wait_for_capacity(self) -> None:
        """Back-pressure: hold the reading connection until the producer queue has room."""
        producer = self._producer
        self.counters.backpressure_pauses += 1
        self.reading_paused += 1
        try:
            while not producer.drain(0):
                await asyncio.sleep(BACKPRESSURE_POLL_S)
        finally:
            self.reading_paused -= 1

    async def _log_stats(self) -> None:
        """One structured line per interval, for log pipelines (the terminal gets a status line)."""
        interval = self.settings.capture.status_interval_s
        before = self.stats()
        while True:
            await asyncio.sleep(interval)
            after = self.stats()
            rate = rates(before, after)
            log.info(
                "capture stats %s",
                msgspec.json.encode({**after.as_dict(), **asdict(rate)}).decode(),
            )
            before = after

    async def _poll_producer(self) -> None:
        """Serve delivery reports; a fatal producer error ends this task, and with it the capture."""
        producer = self._producer
        while producer.fatal_error is None:
            producer.drain(0)
            await asyncio.sleep(POLL_INTERVAL_S)
        raise RuntimeError(f"Kafka producer failed fatally: {producer.fatal_error}")

    # -- events from connections --------------------------------------------------------------

    def on_subscribed(self, instruments: list[str], connection: DeribitConnection) -> None:
        log.debug("connection %d: %d books subscribed", connection.index, len(instruments))

    def on_rejected(self, channels: list[str], connection: DeribitConnection, reason: str) -> None:
        self.counters.rejected_channels += len(channels)
        shown = ", ".join(channels[:10]) + (f" and {len(channels) - 10} more" if len(channels) > 10 else "")
        log.warning("connection %d: %d channels rejected (%s): %s", connection.index, len(channels), reason, shown)

    def on_disconnected(self, instruments: list[str], connection: DeribitConnection, reason: str) -> None:
        """The table already marked these books stale; say so downstream."""
        for name in instruments:
            self._emit_marker("disconnect", name, reason)

    def on_resync(self, instruments: list[str], connection: DeribitConnection, reason: str) -> None:
        self.counters.resyncs += len(instruments)
        log.info("connection %d: resyncing %d books (%s)", connection.index, len(instruments), reason)

    def on_instrument_state(self, data: dict[str, Any]) -> None:
        """An instrument Deribit ended is unsubscribed at once, without waiting for the universe."""
        name, state = data.get("instrument_name"), data.get("state")
        log.info("instrument %s: %s", name, state)
        if state in ENDED_STATES and isinstance(name, str):
            shard = self.table.expire(name)
            if shard is not None:
                self._connections[shard].unsubscribe([name])
                self._emit_marker("unsubscribed", name, f"expired ({state})")

    def on_malformed(self, frame: bytes, error: str, connection: DeribitConnection) -> None:
        self.counters.malformed_frames += 1
        log.warning("connection %d: malformed frame skipped (%s): %.200r", connection.index, error, frame)

    def on_malformed_book(
        self, instrument: str, frame: bytes, error: str, connection: DeribitConnection, data: BookData | None
    ) -> None:
        """Never a record: the frame is counted and logged, and the instrument is resynced. A consumer
        holding its book is told that it misses an update: a ``gap`` when the frame's ids could be
        read, else a ``disconnect`` (the book is stale until its next snapshot)."""
        self.on_malformed(frame, error, connection)
        if instrument not in self.table:
            return
        was_at = self.table.invalidate(instrument)
        if was_at is not None:
            now_us = time.time_ns() // 1000
            if data is not None and data.prev_change_id is not None:
                value = encode_gap(
                    instrument,
                    self.interval,
                    data.timestamp,
                    now_us,
                    data.change_id,
                    data.prev_change_id,
                    was_at,
                    connection.capture_raw,
                    reason="malformed book frame",
                )
                self.counters.markers += 1
                self._producer.offer(instrument, value, data.timestamp)
            else:
                self._emit_marker("disconnect", instrument, "unreadable book frame; resyncing")
        connection.resync([instrument], "malformed book frame")

    def _emit_marker(self, record_type: str, instrument: str, reason: str) -> None:
        now_us = time.time_ns() // 1000
        value = encode_marker(record_type, instrument, self.interval, now_us, reason, self._capture_raw)
        self.counters.markers += 1
        # Markers go through the same in-order path; if the queue is full they wait in overflow.
        self._producer.offer(instrument, value, now_us // 1000)

    # -- monitoring ---------------------------------------------------------------------------

    def stats(self) -> CaptureStats:
        """A snapshot of every counter; safe to call from any thread."""
        return collect_stats(self)

    @property
    def connections(self) -> list[DeribitConnection]:
        return list(self._connections)

    @property
    def producer(self) -> RecordProducer | None:
        return self._producer


class EngineThread:
    """Runs a :class:`CaptureEngine` on its own event loop in a background thread."""

    def __init__(self, engine: CaptureEngine) -> None:
        self.engine = engine
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="optionstream-capture", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.engine.run())
        except BaseException as exc:
            self.error = exc
            log.exception("capture engine failed")
        finally:
            self.engine.ready.set()

    def start(self, ready_timeout_s: float = 30.0) -> EngineThread:
        self._thread.start()
        if not self.engine.ready.wait(ready_timeout_s):
            raise TimeoutError(f"capture engine not ready within {ready_timeout_s} s")
        if self.error is not None:
            raise RuntimeError(f"capture engine failed to start: {self.error}") from self.error
        return self

    def stop(self, timeout_s: float | None = None) -> CaptureStats:
        """Stop, flush (bounded by ``kafka.flush_timeout_s``), and return the final counters."""
        timeout_s = self.engine.settings.kafka.flush_timeout_s + 10 if timeout_s is None else timeout_s
        self.engine.request_stop()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"capture engine did not stop within {timeout_s} s")
        return self.engine.stats()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> EngineThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self.alive:
            self.stop()
