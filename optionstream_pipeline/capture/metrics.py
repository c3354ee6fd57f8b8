"""Prometheus ``/metrics`` for capture, read from :class:`CaptureStats` at scrape time.

A custom collector means the hot path pays nothing for metrics: values are computed only when
Prometheus asks. The endpoint listens on loopback by default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from optionstream_pipeline.capture.stats import CaptureStats

log = logging.getLogger(__name__)

PREFIX = "optionstream_capture"

# name, help, CaptureStats attribute, counter (True) or gauge (False)
_METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("messages_in", "Book notifications received from Deribit", "messages_in", True),
    ("messages_out", "Records handed to the Kafka producer", "messages_out", True),
    ("delivered", "Records acknowledged by Kafka", "delivered", True),
    ("delivery_failed", "Records Kafka failed to deliver (lost)", "delivery_failed", True),
    ("gaps", "change_id gaps detected", "gaps", True),
    ("resyncs", "Per-instrument resynchronizations", "resyncs", True),
    ("reconnects", "WebSocket reconnects", "reconnects", True),
    (
        "rejected_channels",
        "Channels Deribit refused or left out of a subscribe result",
        "rejected_channels",
        True,
    ),
    ("malformed_frames", "Frames that could not be parsed", "malformed_frames", True),
    ("errors_without_id", "Deribit error messages that answered no request", "errors_without_id", True),
    ("rate_limited", "Requests answered with 10028 too_many_requests", "rate_limited", True),
    ("stale_disconnects", "Connections dropped by the silence watchdog", "stale_disconnects", True),
    ("probes_sent", "public/test probes sent to silent connections", "probes_sent", True),
    (
        "backpressure_pauses",
        "Times reading paused because the producer queue was full",
        "backpressure_pauses",
        True,
    ),
    (
        "dropped_awaiting_snapshot",
        "Changes dropped while waiting for a resync snapshot",
        "dropped_awaiting_snapshot",
        True,
    ),
    ("dropped_unfollowed", "Frames of books already left, in flight during an unsubscribe", "dropped_unfollowed", True),
    ("instruments", "Instruments followed", "instruments", False),
    ("instruments_subscribed", "Instruments with a confirmed subscription", "instruments_subscribed", False),
    ("instruments_live", "Instruments updated in the last minute", "instruments_live", False),
    ("connections_up", "WebSocket connections up", "connections_up", False),
    ("rejected_now", "Channels currently rejected", "rejected_now", False),
    ("in_flight", "Records in the producer queue, not yet acknowledged", "in_flight", False),
    ("waiting_in_overflow", "Records waiting for room in the producer queue", "waiting_in_overflow", False),
    ("batch_size_avg_bytes", "Average produced batch size (bytes)", "batch_size_avg_bytes", False),
    ("batch_messages_avg", "Average records per produced batch", "batch_messages_avg", False),
    ("compression_ratio", "Record bytes over wire bytes", "compression_ratio", False),
    ("maintenance", "1 while Deribit reports the platform locked", "maintenance", False),
)


class CaptureCollector(Collector):
    def __init__(self, read_stats: Callable[[], CaptureStats]) -> None:
        self._read_stats = read_stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._read_stats()
        for name, help_text, attribute, is_counter in _METRICS:
            family = CounterMetricFamily if is_counter else GaugeMetricFamily
            yield family(f"{PREFIX}_{name}", help_text, value=float(getattr(stats, attribute)))
        latency = GaugeMetricFamily(
            f"{PREFIX}_delivery_latency_seconds",
            "Produce-to-ack latency of recent records",
            labels=["quantile"],
        )
        for quantile, value in (("0.5", stats.delivery_p50_ms), ("0.99", stats.delivery_p99_ms)):
            if value is not None:
                latency.add_metric([quantile], value / 1000)
        yield latency
        errors = CounterMetricFamily(
            f"{PREFIX}_deribit_errors", "Deribit error replies and notifications, by code", labels=["code"]
        )
        for code, times in sorted(stats.deribit_errors.items()):
            errors.add_metric([str(code)], times)
        yield errors
        ages = GaugeMetricFamily(
            f"{PREFIX}_update_age_seconds",
            "Seconds since the last update of each instrument",
            labels=["instrument"],
        )
        for instrument, age in sorted(stats.update_age_s.items()):
            ages.add_metric([instrument], age)
        yield ages


def serve_metrics(host: str, port: int, read_stats: Callable[[], CaptureStats]) -> tuple[WSGIServer, int]:
    """Start the endpoint in a daemon thread; returns the server and its port (``port=0`` picks one)."""
    registry = CollectorRegistry()
    registry.register(CaptureCollector(read_stats))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return server, bound
