"""Capture health rules, in plain Python: each one judges the latest capture observations.

Why observations and not a Kafka read: the observations already carry every counter the rules
need, reading them is one query on Dagster's own event log (cheap, no broker connection, safe to
run every few minutes), and they describe the capture as it is, not a sample of the topic.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from optionstream_pipeline.orchestration.ops.observation import (
    CAPTURE_ID,
    GAPS,
    INSTRUMENTS,
    INSTRUMENTS_WITH_DATA,
    MESSAGES_IN,
    NEWEST_UPDATE_AGE_S,
    SILENT_INSTRUMENTS,
    SOURCE_FAILURES,
)

NO_OBSERVATION = "no capture observation yet: is a deribit_capture run live?"


@dataclass(frozen=True)
class Observed:
    """One observation: when it was recorded (Unix seconds) and its metadata values."""

    timestamp: float
    values: dict[str, int | float | str]


@dataclass
class Verdict:
    passed: bool
    description: str
    values: dict[str, int | float | str] = field(default_factory=dict)


def freshness(newest_first: Sequence[Observed], now: float, max_age_s: float) -> Verdict:
    """The newest book update is at most ``max_age_s`` old (observation age + its update age)."""
    if not newest_first:
        return Verdict(False, NO_OBSERVATION)
    newest = newest_first[0]
    observed_age = max(0.0, now - newest.timestamp)
    update_age = newest.values.get(NEWEST_UPDATE_AGE_S)
    if not isinstance(update_age, int | float):
        return Verdict(False, "the capture has not received any book update yet", {"observation_age_s": observed_age})
    age = observed_age + float(update_age)
    values = {"last_update_age_s": round(age, 2), "observation_age_s": round(observed_age, 2), "max_age_s": max_age_s}
    if age <= max_age_s:
        return Verdict(True, f"newest book update {age:.1f} s old (limit {max_age_s:g} s)", values)
    return Verdict(False, f"no book update for {age:.0f} s (limit {max_age_s:g} s): capture is stale", values)


def gap_rate(newest_first: Sequence[Observed], now: float, max_rate: float, window_s: float) -> Verdict:
    """Gaps per book message over the window, within the newest capture (counters restart per run)."""
    if not newest_first:
        return Verdict(False, NO_OBSERVATION)
    newest = newest_first[0]
    same_run = [o for o in newest_first if o.values.get(CAPTURE_ID) == newest.values.get(CAPTURE_ID)]
    in_window = [o for o in same_run if o.timestamp >= now - window_s] or [newest]
    oldest = in_window[-1]
    messages = _number(newest, MESSAGES_IN) - _number(oldest, MESSAGES_IN)
    gaps = _number(newest, GAPS) - _number(oldest, GAPS)
    if oldest is newest:  # one observation: judge the run so far
        messages, gaps = _number(newest, MESSAGES_IN), _number(newest, GAPS)
    span = max(0.0, newest.timestamp - oldest.timestamp)
    values = {"gaps": gaps, "messages": messages, "window_s": round(span, 1), "max_gap_rate": max_rate}
    if messages <= 0:
        return Verdict(True, "no book messages in the window; nothing to judge (see freshness)", values)
    rate = gaps / messages
    values["gap_rate"] = rate
    text = f"{gaps:g} gaps in {messages:g} book messages over {span:.0f} s = {rate:.2%} (limit {max_rate:.2%})"
    return Verdict(rate <= max_rate, text, values)


def coverage(newest_first: Sequence[Observed], universe: Collection[str] | None, min_coverage: float) -> Verdict:
    """Every instrument of the universe has book data (its snapshot arrived, so data is flowing).

    ``universe`` is the discovery universe when capture follows it; ``None`` means an explicit list
    and the capture's own followed count is the reference.
    """
    if not newest_first:
        return Verdict(False, NO_OBSERVATION)
    newest = newest_first[0]
    followed = int(_number(newest, INSTRUMENTS))
    with_data = int(_number(newest, INSTRUMENTS_WITH_DATA))
    expected = len(universe) if universe is not None else followed
    values: dict[str, int | float | str] = {
        "universe": expected,
        "followed": followed,
        "with_data": with_data,
        "min_coverage": min_coverage,
    }
    if expected == 0:
        failures = int(_number(newest, SOURCE_FAILURES))
        if failures:
            text = (
                f"capture follows no instrument: its instrument source failed or listed nothing {failures} "
                "times (Deribit's listing, or the discovery universe; see the capture run's log)"
            )
        elif universe is None:
            text = "capture follows no instrument yet"
        else:
            text = "the universe is empty: run the discovery asset or check its filters"
        return Verdict(False, text, values)
    share = min(1.0, with_data / expected)
    values["coverage"] = share
    text = f"{with_data} of {expected} instruments have book data ({share:.1%}, minimum {min_coverage:.0%})"
    if followed != expected:
        text += f"; the capture follows {followed} (it picks up a new universe within seconds)"
    silent = newest.values.get(SILENT_INSTRUMENTS)
    if silent and silent != "none":
        text += f"; without data: {silent}"
    return Verdict(share >= min_coverage and followed == expected, text, values)


def _number(observation: Observed, key: str) -> float:
    value = observation.values.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0
