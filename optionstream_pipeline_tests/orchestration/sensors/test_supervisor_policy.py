"""The supervisor's plain rules: consecutive failures and the backoff arithmetic."""

from __future__ import annotations

from optionstream_pipeline.config import OrchestrationSettings
from optionstream_pipeline.orchestration.sensors.policy import (
    FinishedRun,
    backoff_reason,
    backoff_s,
    consecutive_failures,
    is_dead,
)

SETTINGS = OrchestrationSettings(
    failure_backoff_s=30, max_backoff_s=300, backoff_after_failures=2, heartbeat_stale_s=60
)


def runs(*statuses: str) -> list[FinishedRun]:
    return [FinishedRun(f"run{i:04d}xxxx", status, 1000.0 - i) for i, status in enumerate(statuses)]


def test_consecutive_failures_stop_at_the_first_clean_end() -> None:
    assert consecutive_failures(runs("FAILURE", "FAILURE", "SUCCESS", "FAILURE")) == 2
    assert consecutive_failures(runs("CANCELED", "FAILURE")) == 0
    assert consecutive_failures([]) == 0


def test_backoff_doubles_from_the_threshold_and_is_capped() -> None:
    assert [backoff_s(n, SETTINGS) for n in range(7)] == [0, 0, 30, 60, 120, 240, 300]
    assert backoff_s(10_000, SETTINGS) == 300


def test_backoff_reason_counts_from_the_last_failure_end() -> None:
    history = runs("FAILURE", "FAILURE")
    text = backoff_reason(history, now=1010.0, settings=SETTINGS)
    assert text is not None
    assert text.startswith("Capture failed 2 times in a row")
    assert "20 s left" in text
    assert backoff_reason(history, now=1031.0, settings=SETTINGS) is None


def test_is_dead_uses_the_heartbeat_bound() -> None:
    assert not is_dead(1000.0, 1060.0, SETTINGS)
    assert is_dead(1000.0, 1060.5, SETTINGS)
