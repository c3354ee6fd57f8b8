"""Per-instrument change_id continuity, on the real recorded sequence and on constructed cases."""

from __future__ import annotations

import pytest

from optionstream_pipeline.capture.sequencer import BookSequencer, Verdict
from optionstream_pipeline_tests.support.fixtures import recorded_book_messages


def test_real_recording_is_continuous_for_every_instrument() -> None:
    sequencer = BookSequencer()
    verdicts = [
        sequencer.check(data["instrument_name"], data["change_id"], data.get("prev_change_id"))
        for data in recorded_book_messages()
    ]
    assert verdicts.count(Verdict.SNAPSHOT) == 10
    assert verdicts.count(Verdict.CHANGE) == 36
    assert Verdict.GAP not in verdicts


def test_gap_is_reported_once_then_changes_drop_until_snapshot() -> None:
    sequencer = BookSequencer()
    assert sequencer.check("A", 100, None) is Verdict.SNAPSHOT
    assert sequencer.check("A", 105, 100) is Verdict.CHANGE
    assert sequencer.check("A", 120, 110) is Verdict.GAP
    gap = sequencer.last_gap
    assert (gap.instrument, gap.expected_prev_change_id, gap.prev_change_id, gap.change_id) == ("A", 105, 110, 120)
    assert sequencer.check("A", 125, 120) is Verdict.DROP
    assert not sequencer.is_synced("A")
    assert sequencer.check("A", 130, None) is Verdict.SNAPSHOT
    assert sequencer.check("A", 131, 130) is Verdict.CHANGE


def test_a_gap_on_one_instrument_leaves_the_others_flowing() -> None:
    sequencer = BookSequencer()
    sequencer.check("A", 1, None)
    sequencer.check("B", 2, None)
    assert sequencer.check("A", 5, 3) is Verdict.GAP
    assert sequencer.check("B", 6, 2) is Verdict.CHANGE
    assert sequencer.is_synced("B")


def test_change_before_any_snapshot_is_dropped_not_a_gap() -> None:
    sequencer = BookSequencer()
    assert sequencer.check("A", 5, 4) is Verdict.DROP


@pytest.mark.parametrize("action", ["await_snapshot", "forget"])
def test_after_reconnect_or_removal_changes_wait_for_a_snapshot(action: str) -> None:
    sequencer = BookSequencer()
    sequencer.check("A", 1, None)
    getattr(sequencer, action)("A")
    assert sequencer.check("A", 2, 1) is Verdict.DROP
