"""Prometheus ``/metrics`` for capture, read from :class:`CaptureStats` at scrape time.

A custom collector means the hot path pays nothing for metrics: values are computed only when
Prometheus asks. Every scalar metric comes from :data:`~optionstream_pipeline.capture.stats.METRICS`
(counters get Prometheus' ``_total`` suffix); the labelled families (delivery latency quantiles,
Deribit errors by code, update age by instrument) are below. The endpoint listens on loopback by
default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from optionstream_pipeline.capture.stats import COUNTER, METRICS, CaptureStats

log = logging.getLogger(__name__)

PREFIX = "optionstream_capture"


class CaptureCollector(Collector):
    def __init__(self, read_stats: Callable[[], CaptureStats]) -> None:
        self._read_stats = read_stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._read_stats()
        for metric in METRICS:
            family = CounterMetricFamily if metric.kind == COUNTER else GaugeMetricFamily
            yield family(f"{PREFIX}_{metric.name}", metric.help, value=float(getattr(stats, metric.name)))
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
