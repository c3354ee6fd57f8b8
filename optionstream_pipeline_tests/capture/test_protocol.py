"""The pure client rules: framing limits, rejected channels, backoff, shard planning."""

from __future__ import annotations

import random

import msgspec
import pytest

from optionstream_pipeline.capture.protocol import (
    Backoff,
    ShardPlan,
    batched,
    encode_request,
    error_from_reply,
    rejected_channels,
)
from optionstream_pipeline.config import ReconnectSettings
from optionstream_pipeline.deribit.protocol import MAX_CHANNELS_PER_SUBSCRIBE, book_channel


def test_a_full_subscribe_batch_fits_deribits_frame_limit() -> None:
    channels = [book_channel(f"BTC-27JUN25-{100000 + i * 1000}-C", "100ms") for i in range(MAX_CHANNELS_PER_SUBSCRIBE)]
    frame = encode_request(7, "public/subscribe", {"channels": channels})
    assert msgspec.json.decode(frame) == {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "public/subscribe",
        "params": {"channels": channels},
    }


def test_an_oversized_request_is_refused_before_sending() -> None:
    channels = [book_channel(f"BTC-27JUN25-{100000 + i}-C", "100ms") for i in range(1200)]
    with pytest.raises(ValueError, match="at most 32768"):
        encode_request(1, "public/subscribe", {"channels": channels})


def test_batches_cover_every_channel_in_order() -> None:
    items = [str(i) for i in range(601)]
    batches = list(batched(items, 250))
    assert [len(b) for b in batches] == [250, 250, 101]
    assert [x for b in batches for x in b] == items


def test_rejected_channels_are_those_left_out_of_the_result() -> None:
    assert rejected_channels(["a", "b", "c"], ["c", "a"]) == ["b"]
    assert rejected_channels(["a"], None) == ["a"]


def test_error_without_message_gets_deribits_name() -> None:
    error = error_from_reply({"error": {"code": 10028}}, "public/subscribe")
    assert error.code == 10028
    assert "too_many_requests" in str(error) and "public/subscribe" in str(error)


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


def test_shard_plan_fills_connections_and_keeps_placements_stable() -> None:
    plan = ShardPlan(per_connection=3, max_connections=2)
    placed = plan.assign(["a", "b", "c", "d"])
    assert sum(len(v) for v in placed.values()) == 4
    assert [len(s) for s in plan.shards] == [3, 1]
    owner_of_a = plan.owner("a")
    plan.remove(["b"])
    plan.assign(["e"])
    assert plan.owner("a") == owner_of_a  # nothing moved
    assert plan.owner("b") is None


def test_shard_plan_overfills_when_no_connection_may_open() -> None:
    plan = ShardPlan(per_connection=1, max_connections=2)
    plan.assign(["a", "b", "c"])
    assert len(plan.shards) == 2
    assert sorted(len(s) for s in plan.shards) == [1, 2]


def test_shard_plan_covers_the_full_chain_with_deribits_connection_limit() -> None:
    plan = ShardPlan(per_connection=250, max_connections=16)
    plan.assign([f"BTC-{i}" for i in range(1100)])
    assert len(plan.shards) == 5
    assert sum(len(s) for s in plan.shards) == 1100
