"""The subscription table without sockets: placement, continuity, and what each connection event does.

The continuity cases run on the real recorded sequence and on constructed ones; the placement cases
are the shard planning rules; the rest drive the table as the engine and its connections would.
"""

from __future__ import annotations

import pytest

from optionstream_pipeline.capture.subscriptions import SubscriptionTable, Verdict
from optionstream_pipeline_tests.support.fixtures import recorded_book_messages

T = 1_700_000_000_000_000  # a local receive time, µs


def table_following(*names: str, per_shard: int = 250, max_shards: int = 16) -> SubscriptionTable:
    table = SubscriptionTable(per_shard, max_shards)
    table.follow(names)
    return table


def subscribed_table(*names: str, per_shard: int = 250) -> SubscriptionTable:
    """Following ``names``, every subscription confirmed and every book at its first snapshot."""
    table = table_following(*names, per_shard=per_shard)
    for shard in range(len(table.shard_sizes())):
        assert table.confirm(shard, table.members(shard)) == []
    for change_id, name in enumerate(names, start=1):
        assert table.on_book(name, change_id, None, T) is Verdict.SNAPSHOT
    return table


# -- continuity (moved whole from the former sequencer tests) ------------------------------------


def test_real_recording_is_continuous_for_every_instrument() -> None:
    messages = recorded_book_messages()
    table = table_following(*{data["instrument_name"] for data in messages})
    verdicts = [
        table.on_book(data["instrument_name"], data["change_id"], data.get("prev_change_id"), T) for data in messages
    ]
    assert verdicts.count(Verdict.SNAPSHOT) == 10
    assert verdicts.count(Verdict.CHANGE) == 36
    assert Verdict.GAP not in verdicts


def test_gap_is_reported_once_then_changes_drop_until_snapshot() -> None:
    table = table_following("A")
    assert table.on_book("A", 100, None, T) is Verdict.SNAPSHOT
    assert table.on_book("A", 105, 100, T) is Verdict.CHANGE
    assert table.on_book("A", 120, 110, T) is Verdict.GAP
    gap = table.last_gap
    assert (gap.instrument, gap.expected_prev_change_id, gap.prev_change_id, gap.change_id) == ("A", 105, 110, 120)
    assert table.on_book("A", 125, 120, T) is Verdict.DROP
    assert table.get("A").awaiting_snapshot
    assert table.on_book("A", 130, None, T) is Verdict.SNAPSHOT
    assert table.on_book("A", 131, 130, T) is Verdict.CHANGE


def test_a_gap_on_one_instrument_leaves_the_others_flowing() -> None:
    table = table_following("A", "B")
    table.on_book("A", 1, None, T)
    table.on_book("B", 2, None, T)
    assert table.on_book("A", 5, 3, T) is Verdict.GAP
    assert table.on_book("B", 6, 2, T) is Verdict.CHANGE
    assert not table.get("B").awaiting_snapshot


def test_change_before_any_snapshot_is_dropped_not_a_gap() -> None:
    table = table_following("A")
    assert table.on_book("A", 5, 4, T) is Verdict.DROP


@pytest.mark.parametrize("event", ["connection lost", "left the universe"])
def test_after_reconnect_or_removal_changes_wait_for_a_snapshot(event: str) -> None:
    table = subscribed_table("A")
    if event == "connection lost":
        table.connection_lost(table.shard_of("A"))
        assert table.on_book("A", 2, 1, T) is Verdict.DROP
    else:
        table.follow([])
        assert table.on_book("A", 2, 1, T) is Verdict.UNFOLLOWED
        table.follow(["A"])  # followed again: a new subscription, from its snapshot
        assert table.on_book("A", 3, 2, T) is Verdict.DROP


def test_updates_record_their_local_time_and_snapshots_their_reason() -> None:
    table = table_following("A")
    table.on_book("A", 1, None, T)
    assert table.snapshot_reason == "subscribe"
    table.on_book("A", 2, 1, T + 5)
    assert table.get("A").last_update_us == T + 5
    table.on_book("A", 9, 3, T + 9)  # a gap: not an update of the book
    assert table.get("A").last_update_us == T + 5


# -- placement (moved whole from the former shard-plan tests) -------------------------------------


def test_shard_plan_fills_connections_and_keeps_placements_stable() -> None:
    table = SubscriptionTable(per_shard=3, max_shards=2)
    placed = table.follow(["a", "b", "c", "d"]).added
    assert sum(len(v) for v in placed.values()) == 4
    assert table.shard_sizes() == [3, 1]
    owner_of_a = table.shard_of("a")
    table.follow(["a", "c", "d"])
    table.follow(["a", "c", "d", "e"])
    assert table.shard_of("a") == owner_of_a  # nothing moved
    assert table.shard_of("b") is None


def test_shard_plan_overfills_when_no_connection_may_open() -> None:
    table = SubscriptionTable(per_shard=1, max_shards=2)
    table.follow(["a", "b", "c"])
    assert len(table.shard_sizes()) == 2
    assert sorted(table.shard_sizes()) == [1, 2]


def test_shard_plan_covers_the_full_chain_with_deribits_connection_limit() -> None:
    table = SubscriptionTable(per_shard=250, max_shards=16)
    table.follow([f"BTC-{i}" for i in range(1100)])
    assert len(table.shard_sizes()) == 5
    assert sum(table.shard_sizes()) == 1100


# -- what the engine and the connections tell it ---------------------------------------------------


def test_instruments_added_and_removed_while_connections_are_up() -> None:
    table = subscribed_table("A", "B", "C", per_shard=2)
    assert table.shard_sizes() == [2, 1]
    changes = table.follow(["A", "C", "D", "E"])
    assert changes.removed == {0: ["B"]}
    assert changes.added == {0: ["D"], 1: ["E"]}  # B's room on shard 0 is reused; nothing else moves
    assert (table.shard_of("A"), table.shard_of("C")) == (0, 1)
    assert table.get("D").awaiting_snapshot and table.get("D").snapshot_reason == "subscribe"
    assert not table.get("D").subscribed
    assert table.confirm(0, ["D"]) == []
    assert table.get("D").subscribed and not table.get("A").awaiting_snapshot
    assert table.on_book("B", 9, 2, T) is Verdict.UNFOLLOWED  # in flight during its unsubscribe
    assert not table.follow(["A", "C", "D", "E"])  # nothing to change


def test_a_subscription_confirmed_after_its_removal_is_to_be_undone() -> None:
    table = table_following("A", "B")
    table.follow(["A"])  # B removed while the subscribe request was in flight
    assert table.confirm(0, ["A", "B"]) == ["B"]
    assert table.get("A").subscribed


def test_a_dropped_connection_marks_only_its_subscribed_books_stale() -> None:
    table = subscribed_table("A", "B", "C", per_shard=2)
    table.follow(["A", "B", "C", "D"])  # D placed on shard 1, not yet confirmed
    lost = table.connection_lost(0)
    assert lost == ["A", "B"]  # each gets a disconnect marker
    for name in lost:
        entry = table.get(name)
        assert not entry.subscribed and entry.awaiting_snapshot and entry.snapshot_reason == "reconnect"
    assert table.on_book("C", 10, 3, T) is Verdict.CHANGE  # the other connection's books keep flowing
    assert table.get("D").snapshot_reason == "subscribe"
    assert table.connection_lost(0) == []  # nothing subscribed there any more: no second marker
    table.confirm(0, ["A", "B"])
    assert table.on_book("A", 20, None, T) is Verdict.SNAPSHOT and table.snapshot_reason == "reconnect"


def test_a_resync_names_the_next_snapshot_and_leaving_books_are_no_disconnect() -> None:
    table = subscribed_table("A", "B")
    assert table.on_book("A", 9, 5, T) is Verdict.GAP
    assert table.resyncing(0, ["A", "Z"]) == ["A"]  # Z is not followed
    table.unsubscribing(0, ["A"])  # the resync's unsubscribe
    assert table.connection_lost(0) == ["B"]  # A is being left: no disconnect marker for it
    table.confirm(0, ["A", "B"])
    assert table.on_book("A", 30, None, T) is Verdict.SNAPSHOT and table.snapshot_reason == "resync"


def test_a_rejected_channel_is_remembered_until_confirmed_or_removed() -> None:
    table = table_following("A", "B")
    table.reject(0, ["B"], "left out of the subscribe result by Deribit")
    table.confirm(0, ["A"])
    assert table.get("B").rejected == "left out of the subscribe result by Deribit"
    assert not table.get("B").subscribed
    assert [entry.name for entry in table.instruments() if entry.rejected] == ["B"]
    table.confirm(0, ["B"])  # accepted on a later attempt
    assert table.get("B").rejected is None and table.get("B").subscribed
    table.reject(0, ["B"], "13778")
    table.follow(["A"])
    assert not any(entry.rejected for entry in table.instruments())


def test_an_instrument_that_expires_while_awaiting_its_snapshot_is_dropped_for_good() -> None:
    table = table_following("A", "B")
    table.confirm(0, ["A", "B"])
    table.on_book("B", 1, None, T)
    assert table.get("A").awaiting_snapshot
    assert table.expire("A") == 0  # unsubscribe it on shard 0
    assert "A" not in table and table.shard_sizes() == [1]
    assert table.on_book("A", 2, None, T) is Verdict.UNFOLLOWED
    assert not table.follow(["A", "B"])  # a universe not yet refreshed does not bring it back
    assert table.expire("A") is None  # told twice: nothing more to do
    table.follow(["B"])  # once the universe drops it, it need not be remembered
    assert table.expired == set()
