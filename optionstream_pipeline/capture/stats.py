"""Capture counters: the engine's own, the connections', and librdkafka's, in one snapshot.

:class:`CaptureStats` is what every view of capture reads: the terminal status line, the periodic
structured log line, the Prometheus endpoint and the Dagster observations. Rates are derived
from two snapshots (:func:`rates`), so the hot path only increments integers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optionstream_pipeline.capture.engine import CaptureEngine


@dataclass
class EngineCounters:
    """Incremented on the engine's event loop; read (racily but harmlessly) from other threads."""

    messages_in: int = 0
    dropped_awaiting_snapshot: int = 0
    gaps: int = 0
    resyncs: int = 0
    markers: int = 0
    rejected_channels: int = 0
    malformed_frames: int = 0
    backpressure_pauses: int = 0
    dropped_unfollowed: int = 0


@dataclass
class CaptureStats:
    """Everything a person or a dashboard wants to know about a capture, at one moment."""

    capture_id: str
    taken_at: float
    uptime_s: float
    interval: str
    instruments: int
    instruments_subscribed: int
    instruments_live: int  # with an update in the last minute
    connections: int
    connections_up: int
    messages_in: int
    messages_out: int
    delivered: int
    delivery_failed: int
    in_flight: int
    waiting_in_overflow: int
    gaps: int
    resyncs: int
    reconnects: int
    rejected_channels: int
    rejected_now: int
    malformed_frames: int
    errors_without_id: int
    rate_limited: int
    stale_disconnects: int
    probes_sent: int
    heartbeats_answered: int
    maintenance: bool
    dropped_awaiting_snapshot: int
    dropped_unfollowed: int
    backpressure_pauses: int
    markers: int
    delivery_p50_ms: float | None
    delivery_p99_ms: float | None
    oldest_update_age_s: float | None
    batch_size_avg_bytes: float
    batch_messages_avg: float
    compression_ratio: float
    brokers_up: int
    last_error: str | None
    deribit_errors: dict[int, int] = field(default_factory=dict)  # Deribit error code -> times seen
    update_age_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self, with_instruments: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_instruments:
            data.pop("update_age_s")
        return data


LIVE_WITHIN_S = 60.0


def collect_stats(engine: CaptureEngine) -> CaptureStats:
    now = time.time()
    now_us = int(now * 1e6)
    counters = engine.counters
    connections = engine.connections
    producer = engine.producer
    ages = {name: (now_us - seen) / 1e6 for name, seen in list(engine.last_update_us.items())}
    latencies = sorted(list(producer.delivery.latencies_s)) if producer else []
    stats = producer.stats if producer else None
    return CaptureStats(
        capture_id=engine.capture_id,
        taken_at=now,
        uptime_s=now - engine.started_at,
        interval=engine.interval,
        instruments=len(engine.instruments),
        instruments_subscribed=sum(len(c.subscribed) for c in connections),
        instruments_live=sum(1 for age in ages.values() if age <= LIVE_WITHIN_S),
        connections=len(connections),
        connections_up=sum(1 for c in connections if c.connected),
        messages_in=counters.messages_in,
        messages_out=producer.produced if producer else 0,
        delivered=producer.delivery.delivered if producer else 0,
        delivery_failed=producer.delivery.failed if producer else 0,
        in_flight=producer.in_flight() if producer else 0,
        waiting_in_overflow=producer.waiting if producer else 0,
        gaps=counters.gaps,
        resyncs=counters.resyncs,
        reconnects=sum(c.counters.reconnects for c in connections),
        rejected_channels=counters.rejected_channels,
        rejected_now=sum(len(c.rejected) for c in connections),
        malformed_frames=counters.malformed_frames,
        errors_without_id=sum(c.counters.errors_without_id for c in connections),
        rate_limited=sum(c.counters.rate_limited for c in connections),
        stale_disconnects=sum(c.counters.stale_disconnects for c in connections),
        probes_sent=sum(c.counters.probes_sent for c in connections),
        heartbeats_answered=sum(c.counters.heartbeats_answered for c in connections),
        maintenance=any(c.maintenance for c in connections),
        dropped_awaiting_snapshot=counters.dropped_awaiting_snapshot,
        dropped_unfollowed=counters.dropped_unfollowed,
        backpressure_pauses=counters.backpressure_pauses,
        markers=counters.markers,
        delivery_p50_ms=_percentile_ms(latencies, 0.50),
        delivery_p99_ms=_percentile_ms(latencies, 0.99),
        oldest_update_age_s=max(ages.values()) if ages else None,
        batch_size_avg_bytes=stats.batch_size_avg if stats else 0.0,
        batch_messages_avg=stats.batch_count_avg if stats else 0.0,
        compression_ratio=stats.compression_ratio if stats else 0.0,
        brokers_up=stats.brokers_up if stats else 0,
        last_error=next((c.counters.last_error for c in connections if c.counters.last_error), None),
        deribit_errors=_sum_counts(c.counters.errors_by_code for c in connections),
        update_age_s=ages,
    )


def _sum_counts(counts: Iterable[dict[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for one in counts:
        for code, times in list(one.items()):
            total[code] = total.get(code, 0) + times
    return total


def _percentile_ms(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of the recent delivery latencies, in milliseconds."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))] * 1000


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
    return (
        f"in {rate.messages_in_per_s:,.0f}/s  out {rate.messages_out_per_s:,.0f}/s  "
        f"books {stats.instruments_subscribed}/{stats.instruments}  conns {stats.connections_up}/{stats.connections}  "
        f"p99 {p99}  oldest {age}  queue {stats.in_flight + stats.waiting_in_overflow:,}  "
        f"gaps {stats.gaps}  resyncs {stats.resyncs}  reconnects {stats.reconnects}  "
        f"rejected {stats.rejected_now}  failed {stats.delivery_failed}{flags}"
    )
