"""Capture health rules (plain Python) over hand-made observations."""

from __future__ import annotations

from optionstream_pipeline.orchestration.assets.capture.health import Observed, coverage, freshness, gap_rate


def observed(at: float, capture: str = "c1", **values: object) -> Observed:
    base = {"capture_id": capture, "messages_in": 0, "gaps": 0, "instruments": 3, "instruments_with_data": 3}
    return Observed(at, {**base, **values})


def test_freshness_adds_the_observation_age_to_the_update_age() -> None:
    verdict = freshness([observed(100.0, newest_update_age_s=2.0)], now=110.0, max_age_s=60)
    assert verdict.passed
    assert verdict.values["last_update_age_s"] == 12.0
    stale = freshness([observed(100.0, newest_update_age_s=2.0)], now=200.0, max_age_s=60)
    assert not stale.passed and "capture is stale" in stale.description


def test_freshness_fails_without_observations_or_updates() -> None:
    assert not freshness([], now=1.0, max_age_s=60).passed
    assert not freshness([observed(1.0)], now=1.0, max_age_s=60).passed


def test_gap_rate_over_the_window_within_one_capture() -> None:
    newest_first = [
        observed(400.0, messages_in=11_000, gaps=6),
        observed(200.0, messages_in=10_000, gaps=5),
        observed(50.0, messages_in=1_000, gaps=0),  # outside a 300 s window
        observed(10.0, capture="c0", messages_in=99_999, gaps=999),  # an older run
    ]
    verdict = gap_rate(newest_first, now=400.0, max_rate=0.002, window_s=300)
    assert verdict.passed
    assert verdict.values["gaps"] == 1 and verdict.values["messages"] == 1000
    assert not gap_rate(newest_first, now=400.0, max_rate=0.0005, window_s=300).passed


def test_gap_rate_without_messages_passes_and_says_why() -> None:
    verdict = gap_rate([observed(1.0), observed(0.5)], now=1.0, max_rate=0.001, window_s=300)
    assert verdict.passed and "nothing to judge" in verdict.description


def test_coverage_compares_with_the_universe() -> None:
    universe = ["A", "B", "C", "D"]
    newest = observed(1.0, instruments=4, instruments_with_data=3, instruments_without_data="D")
    partial = coverage([newest], universe, 1.0)
    assert not partial.passed and "3 of 4" in partial.description and "without data: D" in partial.description
    full = coverage([observed(1.0, instruments=4, instruments_with_data=4)], universe, 1.0)
    assert full.passed
    lagging = coverage([observed(1.0, instruments=3, instruments_with_data=3)], universe, 0.5)
    assert not lagging.passed and "follows 3" in lagging.description


def test_coverage_of_an_explicit_list_uses_the_followed_count() -> None:
    assert coverage([observed(1.0)], None, 1.0).passed
    assert not coverage([observed(1.0, instruments=0, instruments_with_data=0)], None, 1.0).passed
