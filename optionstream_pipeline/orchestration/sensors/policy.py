"""The supervisor's rules in plain Python: when a run is dead, and how long to wait after failures.

Kept free of Dagster so the arithmetic and the wording of the skip reasons are easy to test and read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from optionstream_pipeline.config import OrchestrationSettings

FAILURE = "FAILURE"


@dataclass(frozen=True)
class FinishedRun:
    run_id: str
    status: str  # SUCCESS, FAILURE or CANCELED
    end_time: float | None


def is_dead(last_heartbeat: float, now: float, settings: OrchestrationSettings) -> bool:
    """A STARTED run whose newest event is older than ``heartbeat_stale_s`` has no live worker."""
    return now - last_heartbeat > settings.heartbeat_stale_s


def consecutive_failures(newest_first: Sequence[FinishedRun]) -> int:
    """Failures since the last run that ended otherwise (a recycle or a cancel resets the count)."""
    count = 0
    for run in newest_first:
        if run.status != FAILURE:
            break
        count += 1
    return count


def backoff_s(failures: int, settings: OrchestrationSettings) -> float:
    """0 below ``backoff_after_failures``; then failure_backoff_s, doubling, up to max_backoff_s."""
    if failures < settings.backoff_after_failures:
        return 0.0
    exponent = failures - settings.backoff_after_failures
    return min(settings.max_backoff_s, settings.failure_backoff_s * 2 ** min(exponent, 30))


def backoff_reason(newest_first: Sequence[FinishedRun], now: float, settings: OrchestrationSettings) -> str | None:
    """Why to wait before the next launch, in plain words, or ``None`` to launch now."""
    failures = consecutive_failures(newest_first)
    wait = backoff_s(failures, settings)
    if not wait:
        return None
    last = newest_first[0]
    ended = last.end_time if last.end_time is not None else now
    resume = ended + wait
    if now >= resume:
        return None
    return (
        f"Capture failed {failures} times in a row; the last failure (run {last.run_id[:8]}) ended at "
        f"{clock_text(ended)}. Waiting {wait:g} s before the next attempt: {resume - now:.0f} s left, "
        f"until {clock_text(resume)}."
    )


def clock_text(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S UTC")
