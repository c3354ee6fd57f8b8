"""Capture counters: the engine's own, the connections', the subscription table's and librdkafka's, in one snapshot.

:class:`CaptureStats` is what every view of capture reads: the terminal status line, the periodic
structured log line, the Prometheus endpoint and the Dagster observations. Its metric fields are
declared once, with their kind and help text (:data:`METRICS`). Rates are derived from two
snapshots (:func:`rates`), so the hot path only increments integers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from optionstream_pipeline.kafka.producer import Accounting

if TYPE_CHECKING:
    from optionstream_pipeline.capture.connection import DeribitConnection
    from optionstream_pipeline.capture.engine import CaptureEngine


@dataclass
class EngineCounters:
    """Incremented on the engine's event loop; read (racily but harmlessly) from other threads."""

    messages_in: int = 0
    tickers_in: int = 0
    tickers_out: int = 0
    dropped_awaiting_snapshot: int = 0
    gaps: int = 0
    resyncs: int = 0
    markers: int = 0
    rejected_channels: int = 0
    malformed_frames: int = 0
    backpressure_pauses: int = 0
    dropped_unfollowed: int = 0
    source_failures: int = 0


@dataclass
class ConnectionCounters:
    """One connection's own counters; the integer ones are summed over connections by name."""

    connects: int = 0
    reconnects: int = 0
    heartbeats_answered: int = 0
    errors_without_id: int = 0
    stale_disconnects: int = 0
    probes_sent: int = 0
    rate_limited: int = 0
    tls_refused: int = 0
    last_error: str | None = None
    errors_by_code: dict[int, int] = field(default_factory=dict)


COUNTER = "counter"
GAUGE = "gauge"


def _counter(help_text: str) -> Any:
    return field(metadata={"metric": COUNTER, "help": help_text})


def _gauge(help_text: str) -> Any:
    return field(metadata={"metric": GAUGE, "help": help_text})


@dataclass
class CaptureStats:
    """Everything a person or a dashboard wants to know about a capture, at one moment.

    A field declared with ``_counter`` or ``_gauge`` is a metric: the Prometheus endpoint and the
    Dagster observation both derive theirs from these declarations (:data:`METRICS`), so a new
    counter is added here once and shows up everywhere.
    """

    capture_id: str
    taken_at: float
    uptime_s: float
    interval: str
    instruments: int = _gauge("Instruments followed")
    instruments_subscribed: int = _gauge("Instruments with a confirmed subscription")
    instruments_awaiting_snapshot: int = _gauge("Instruments waiting for a snapshot (new, after a gap or a reconnect)")
    instruments_live: int = _gauge("Instruments updated in the last minute")
    connections: int = _gauge("WebSocket connections (shards) of the capture")
    connections_up: int = _gauge("WebSocket connections up")
    connects: int = _counter("WebSocket sessions opened (the first of each connection included)")
    messages_in: int = _counter("Book notifications received from Deribit")
    tickers_in: int = _counter("Ticker notifications received from Deribit")
    tickers_out: int = _counter(
        "Ticker records accepted for the ticker topic (counted in messages_out once handed over)"
    )
    messages_out: int = _counter("Records handed to the Kafka producer, book and ticker")
    delivered: int = _counter("Records acknowledged by Kafka")
    delivery_failed: int = _counter("Records Kafka failed to deliver (lost)")
    in_flight: int = _gauge("Records in the producer queue, not yet acknowledged")
    waiting_in_overflow: int = _gauge("Records waiting for room in the producer queue")
    gaps: int = _counter("change_id gaps detected")
    resyncs: int = _counter("Per-instrument resynchronizations")
    reconnects: int = _counter("WebSocket reconnects")
    rejected_channels: int = _counter("Channels Deribit refused or left out of a subscribe result")
    rejected_now: int = _gauge("Channels currently rejected")
    malformed_frames: int = _counter("Frames that could not be parsed")
    errors_without_id: int = _counter("Deribit error messages that answered no request")
    rate_limited: int = _counter("Requests answered with 10028 too_many_requests")
    stale_disconnects: int = _counter("Connections dropped by the silence watchdog")
    probes_sent: int = _counter("public/test probes sent to silent connections")
    heartbeats_answered: int = _counter("Deribit test_request heartbeats answered")
    tls_refused: int = _counter("Connection attempts refused because Deribit's TLS certificate failed verification")
    maintenance: bool = _gauge("1 while Deribit reports the platform locked")
    dropped_awaiting_snapshot: int = _counter("Changes dropped while waiting for a resync snapshot")
    dropped_unfollowed: int = _counter("Frames of books already left, in flight during an unsubscribe")
    source_failures: int = _counter(
        "Reads of the instrument source (universe, live chain) that failed or listed nothing"
    )
    backpressure_pauses: int = _counter("Times reading paused because the producer queue was full")
    markers: int = _counter("Marker records written: gap, disconnect, unsubscribed")
    batch_size_avg_bytes: float = _gauge("Average produced batch size (bytes)")
    batch_messages_avg: float = _gauge("Average records per produced batch")
    compression_ratio: float = _gauge("Record bytes over wire bytes")
    brokers_up: int = _gauge("Kafka brokers the producer is connected to")
    delivery_p50_ms: float | None = None
    delivery_p99_ms: float | None = None
    oldest_update_age_s: float | None = None
    last_error: str | None = None
    source_problem: str | None = None  # why the instrument source gave nothing, when it did not
    deribit_errors: dict[int, int] = field(default_factory=dict)  # Deribit error code -> times seen
    update_age_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self, with_instruments: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_instruments:
            data.pop("update_age_s")
        return data


@dataclass(frozen=True)
class Metric:
    """One scalar metric of :class:`CaptureStats`: its attribute name, kind and help text."""

    name: str
    kind: str  # COUNTER (only grows within one capture) or GAUGE
    help: str


METRICS: tuple[Metric, ...] = tuple(
    Metric(spec.name, spec.metadata["metric"], spec.metadata["help"])
    for spec in fields(CaptureStats)
    if "metric" in spec.metadata
)


LIVE_WITHIN_S = 60.0


def collect_stats(engine: CaptureEngine) -> CaptureStats:
    now = time.time()
    now_us = int(now * 1e6)
    connections = engine.connections
    producer = engine.producer
    followed = engine.table.instruments()
    ages = {entry.name: (now_us - entry.last_update_us) / 1e6 for entry in followed if entry.last_update_us}
    stats = producer.stats if producer else None
    accounting = producer.accounting if producer else Accounting()
    return CaptureStats(
        capture_id=engine.capture_id,
        taken_at=now,
        uptime_s=now - engine.started_at,
        interval=engine.interval,
        instruments=len(followed),
        instruments_subscribed=sum(1 for entry in followed if entry.subscribed),
        instruments_awaiting_snapshot=sum(1 for entry in followed if entry.awaiting_snapshot),
        instruments_live=sum(1 for age in ages.values() if age <= LIVE_WITHIN_S),
        connections=len(connections),
        connections_up=sum(1 for c in connections if c.connected),
        **asdict(engine.counters),
        **_connection_totals(connections),
        messages_out=accounting.handed_over,
        delivered=accounting.delivered,
        delivery_failed=accounting.failed,
        in_flight=accounting.in_flight,
        waiting_in_overflow=producer.waiting if producer else 0,
        rejected_now=sum(1 for entry in followed if entry.rejected),
        maintenance=any(c.maintenance for c in connections),
        batch_size_avg_bytes=stats.batch_size_avg if stats else 0.0,
        batch_messages_avg=stats.batch_count_avg if stats else 0.0,
        compression_ratio=stats.compression_ratio if stats else 0.0,
        brokers_up=stats.brokers_up if stats else 0,
        delivery_p50_ms=stats.delivery_p50_ms if stats else None,
        delivery_p99_ms=stats.delivery_p99_ms if stats else None,
        oldest_update_age_s=max(ages.values()) if ages else None,
        last_error=next((c.counters.last_error for c in connections if c.counters.last_error), None),
        source_problem=engine.source_problem,
        deribit_errors=_sum_counts(c.counters.errors_by_code for c in connections),
        update_age_s=ages,
    )


def _connection_totals(connections: Iterable[DeribitConnection]) -> dict[str, int]:
    """Every integer counter of the connections, summed (the field names are the stats' names)."""
    totals = {name: 0 for name, value in asdict(ConnectionCounters()).items() if isinstance(value, int)}
    for connection in connections:
        for name, value in asdict(connection.counters).items():
            if isinstance(value, int):
                totals[name] += value
    return totals


def _sum_counts(counts: Iterable[dict[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for one in counts:
        for code, times in list(one.items()):
            total[code] = total.get(code, 0) + times
    return total


@dataclass
class Rates:
    messages_in_per_s: float
    messages_out_per_s: float
    delivered_per_s: float


def rates(before: CaptureStats, after: CaptureStats) -> Rates:
    elapsed = max(1e-9, after.taken_at - before.taken_at)
    return Rates(
        (after.messages_in - before.messages_in) / elapsed,
        (after.messages_out - before.messages_out) / elapsed,
        (after.delivered - before.delivered) / elapsed,
    )


def status_line(stats: CaptureStats, rate: Rates) -> str:
    """The one line a person at a terminal watches."""
    p99 = f"{stats.delivery_p99_ms:.1f} ms" if stats.delivery_p99_ms is not None else "-"
    age = f"{stats.oldest_update_age_s:.1f} s" if stats.oldest_update_age_s is not None else "-"
    flags = " MAINTENANCE" if stats.maintenance else ""
    if not stats.instruments:
        flags += f" NO INSTRUMENTS ({stats.source_problem or 'none configured'})"
    return (
        f"in {rate.messages_in_per_s:,.0f}/s  out {rate.messages_out_per_s:,.0f}/s  "
        f"books {stats.instruments_subscribed}/{stats.instruments}  conns {stats.connections_up}/{stats.connections}  "
        f"p99 {p99}  oldest {age}  queue {stats.in_flight + stats.waiting_in_overflow:,}  "
        f"gaps {stats.gaps}  resyncs {stats.resyncs}  reconnects {stats.reconnects}  "
        f"rejected {stats.rejected_now}  failed {stats.delivery_failed}{flags}"
    )
