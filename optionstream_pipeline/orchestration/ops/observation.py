"""Capture counters as the flat numbers a Dagster observation carries (plain Python, no Dagster).

Every metric of :data:`~optionstream_pipeline.capture.stats.METRICS` (the same ones Prometheus
serves), plus rates, latencies, update ages and coverage. The op turns these into
``AssetObservation`` metadata on the Kafka topic asset, the UI plots each numeric key over time, and
the asset checks read the same keys back. No secrets: only counters, rates, ages and instrument
counts, plus the capture id, book interval and topic name.
"""

from __future__ import annotations

from collections.abc import Collection

from optionstream_pipeline.capture.stats import METRICS, CaptureStats, rates

MESSAGES_IN = "messages_in"
GAPS = "gaps"
INSTRUMENTS = "instruments"
INSTRUMENTS_WITH_DATA = "instruments_with_data"
NEWEST_UPDATE_AGE_S = "newest_update_age_s"
OLDEST_UPDATE_AGE_S = "oldest_update_age_s"
CAPTURE_ID = "capture_id"
SILENT_INSTRUMENTS = "instruments_without_data"
SOURCE_FAILURES = "source_failures"

SILENT_SHOWN = 20

Value = int | float | str


def observation_values(
    after: CaptureStats, before: CaptureStats | None, followed: Collection[str], topic: str
) -> dict[str, Value]:
    """Counters, per-second rates since ``before``, update ages and coverage of ``followed``."""
    values: dict[str, Value] = {metric.name: _number(getattr(after, metric.name)) for metric in METRICS}
    rate = rates(before or after, after)
    values |= {
        "messages_in_per_s": round(rate.messages_in_per_s, 2),
        "messages_out_per_s": round(rate.messages_out_per_s, 2),
        "delivered_per_s": round(rate.delivered_per_s, 2),
        "uptime_s": round(after.uptime_s, 1),
        INSTRUMENTS: len(followed),
    }
    for key, value in (
        ("delivery_p50_ms", after.delivery_p50_ms),
        ("delivery_p99_ms", after.delivery_p99_ms),
        (OLDEST_UPDATE_AGE_S, after.oldest_update_age_s),
        (NEWEST_UPDATE_AGE_S, min(after.update_age_s.values(), default=None)),
    ):
        if value is not None:
            values[key] = round(float(value), 3)
    silent = sorted(name for name in followed if name not in after.update_age_s)
    values[INSTRUMENTS_WITH_DATA] = len(followed) - len(silent)
    values[SILENT_INSTRUMENTS] = _shown(silent)
    values |= {CAPTURE_ID: after.capture_id, "interval": after.interval, "topic": topic}
    return values


def _number(value: float | int | bool) -> int | float:
    """Flags as 0/1 and whole numbers as integers, so that the UI plots every metric."""
    return round(value, 3) if isinstance(value, float) else int(value)


def _shown(names: list[str]) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - SILENT_SHOWN} more" if len(names) > SILENT_SHOWN else ""
    return ", ".join(names[:SILENT_SHOWN]) + more
