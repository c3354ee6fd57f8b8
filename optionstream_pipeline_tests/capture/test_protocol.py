"""The pure client rules: subscribe batches, rejected channels, backoff."""

from __future__ import annotations

import random

from optionstream_pipeline.capture.protocol import Backoff, batched, rejected_channels
from optionstream_pipeline.config import ReconnectSettings


def test_batches_cover_every_channel_in_order() -> None:
    items = [str(i) for i in range(601)]
    batches = list(batched(items, 250))
    assert [len(b) for b in batches] == [250, 250, 101]
    assert [x for b in batches for x in b] == items


def test_rejected_channels_are_those_left_out_of_the_result() -> None:
    assert rejected_channels(["a", "b", "c"], ["c", "a"]) == ["b"]
    assert rejected_channels(["a"], None) == ["a"]


def test_backoff_grows_exponentially_with_jitter_capped_and_resets() -> None:
    backoff = Backoff(
        ReconnectSettings(initial_backoff_ms=100, max_backoff_ms=1000, multiplier=2.0, jitter=0.1),
        random.Random(1),
    )
    delays = [backoff.next_delay_s() for _ in range(7)]
    for delay, base in zip(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0], strict=True):
        assert base * 0.9 <= delay <= base * 1.1
    assert len(set(delays)) == len(delays)  # jitter spreads reconnect storms
    backoff.reset()
    assert 0.09 <= backoff.next_delay_s() <= 0.11
