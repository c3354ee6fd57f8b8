"""The consumer's rules (pure): what a book is after each kind of record, and why it is not reliable."""

from __future__ import annotations

from datetime import date

import pytest

from optionstream_pipeline.consume.books import WAITING, BookBuilder, ContinuityError
from optionstream_pipeline.consume.selection import Selection
from optionstream_pipeline.deribit.instruments import InstrumentNameError
from optionstream_pipeline_tests.support.books import Stream

NAME, OTHER = "BTC-27JUN25-100000-C", "BTC-27JUN25-90000-P"


def built(stream: Stream, builder: BookBuilder | None = None) -> BookBuilder:
    builder = builder or BookBuilder()
    for record in stream.records:
        builder.apply(record.record, record.partition)
    return builder


def opened(stream: Stream, name: str = NAME, change_id: int = 10, session: str = "a") -> None:
    stream.snapshot(name, 0, change_id, session, bids=[("new", 0.05, 10.0), ("new", 0.04, 3.0)],
                    asks=[("new", 0.06, 2.0), ("new", 0.07, 8.0)])  # fmt: skip


def test_a_snapshot_makes_a_reliable_book_and_changes_that_continue_it_apply() -> None:
    stream = Stream()
    opened(stream)
    stream.change(NAME, 1, 11, 10, bids=[("change", 0.05, 4.0), ("delete", 0.04, 0.0)], asks=[("new", 0.055, 1.5)])
    book = built(stream).books[NAME]
    assert (book.reliable, book.why, book.change_id) == (True, None, 11)
    assert book.bids == {0.05: 4.0} and book.asks == {0.055: 1.5, 0.06: 2.0, 0.07: 8.0}
    assert book.best_bid() == (0.05, 4.0) and book.best_ask() == (0.055, 1.5)
    assert book.mid() == pytest.approx(0.0525) and book.spread() == pytest.approx(0.005)
    assert book.depth(2) == ([(0.05, 4.0)], [(0.055, 1.5), (0.06, 2.0)])
    assert book.exchange_timestamp_ms == stream.records[-1].timestamp_ms
    assert book.local_timestamp_us == stream.records[-1].record.local_timestamp_us
    assert book.capture_id == "a"


def test_a_one_sided_book_has_no_mid_or_spread() -> None:
    stream = Stream()
    stream.snapshot(NAME, 0, 10, bids=[("new", 0.05, 1.0)])
    book = built(stream).books[NAME]
    assert (book.best_ask(), book.mid(), book.spread()) == (None, None, None)


def test_a_change_that_does_not_continue_the_book_is_refused_until_the_next_snapshot() -> None:
    stream = Stream()
    opened(stream)
    stream.change(NAME, 1, 13, 12, bids=[("change", 0.05, 99.0)])  # 11 and 12 never came
    stream.change(NAME, 2, 14, 13, bids=[("change", 0.05, 98.0)])  # continues the refused one: refused too
    builder = built(stream)
    book = builder.books[NAME]
    assert not book.reliable and book.why == "gap: change 13 continues 12, not the book's 10"
    assert book.bids[0.05] == 10.0 and book.change_id == 10
    stream.snapshot(NAME, 3, 20, bids=[("new", 0.05, 7.0)], reason="resync")
    builder.apply(stream.records[-1].record)
    assert (builder.books[NAME].reliable, builder.books[NAME].bids) == (True, {0.05: 7.0})


def test_strict_mode_raises_on_a_change_that_does_not_continue_the_book() -> None:
    stream = Stream()
    opened(stream)
    stream.change(NAME, 1, 13, 12)
    with pytest.raises(ContinuityError, match="change 13 continues 12, but the book is at 10"):
        built(stream, BookBuilder(strict=True))


def test_changes_before_any_snapshot_make_a_book_waiting_for_it() -> None:
    stream = Stream()
    stream.change(NAME, 0, 11, 10, bids=[("new", 0.05, 1.0)])
    stream.gap(NAME, 1, 14, 12, 11)
    book = built(stream).books[NAME]
    assert (book.reliable, book.why, book.bids, book.change_id) == (False, WAITING, {}, None)


@pytest.mark.parametrize("kind", ["gap", "disconnect"])
def test_a_marker_makes_the_book_unreliable_saying_why_until_the_next_snapshot(kind: str) -> None:
    stream = Stream()
    opened(stream)
    if kind == "gap":
        stream.gap(NAME, 1, 14, 12, 10)
    else:
        stream.marker("disconnect", NAME, 1, "connection dropped")
    book = built(stream).books[NAME]
    reason = stream.records[-1].record.reason
    assert (book.reliable, book.why) == (False, f"{kind}: {reason}")
    assert book.bids == {0.05: 10.0, 0.04: 3.0}  # the last state is kept, to be shown as stale


def test_unsubscribed_removes_the_book_and_its_last_update_says_so() -> None:
    stream = Stream()
    opened(stream)
    stream.marker("unsubscribed", NAME, 1, "left the universe")
    builder = BookBuilder()
    books = [builder.apply(r.record) for r in stream.records]
    assert NAME not in builder.books
    assert books[-1].why == "unsubscribed: left the universe"


def test_a_new_capture_session_on_a_partition_ends_the_books_the_old_one_left_there() -> None:
    old, other_partition = Stream(0), Stream(1)
    opened(old, NAME, session="a")
    opened(old, OTHER, session="a")
    opened(other_partition, "BTC-27JUN25-80000-C", session="a")
    builder = built(other_partition, built(old))
    new = Stream(0)
    opened(new, OTHER, change_id=50, session="b")  # b's first record on partition 0: its resync of OTHER
    built(new, builder)
    assert builder.books[NAME].why == "capture session a ended without markers"
    assert builder.books[OTHER].reliable and builder.books[OTHER].capture_id == "b"
    assert builder.books["BTC-27JUN25-80000-C"].reliable  # partition 1 has not seen b yet
    again = Stream(0)
    again.change(NAME, 5, 12, 11, session="a")  # a again (two captures at once): ends nothing of b's
    built(again, builder)
    assert builder.books[OTHER].reliable


def test_only_selected_instruments_are_rebuilt() -> None:
    stream = Stream()
    opened(stream, NAME)
    opened(stream, OTHER)
    builder = built(stream, BookBuilder(select=Selection.of(kinds=["put"])))
    assert list(builder.books) == [OTHER]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({"instruments": [NAME]}, {NAME}),
        ({"expiries": ["27JUN25"]}, {NAME, OTHER}),
        ({"expiries": ["2025-06-27"], "strikes": ["90000"]}, {OTHER}),
        ({"expiries": [date(2025, 6, 28)]}, set()),
        ({"kinds": ["C"]}, {NAME}),
        ({}, {NAME, OTHER, "BTC-PERPETUAL"}),
    ],
)
def test_a_selection_matches_by_name_expiry_strike_and_kind(criteria: dict, expected: set[str]) -> None:
    selection = Selection.of(**criteria)
    assert {name for name in (NAME, OTHER, "BTC-PERPETUAL") if selection(name)} == expected


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ({"instruments": ["BTC-27JUN25-100000"]}, "is not a Deribit option name"),
        ({"expiries": ["JUNE"]}, "'JUNE' is not an expiry"),
        ({"strikes": ["abc"]}, "'abc' is not a strike"),
        ({"kinds": ["straddle"]}, "'straddle' is not an option type"),
    ],
)
def test_a_bad_selection_is_refused_naming_the_value(criteria: dict, message: str) -> None:
    with pytest.raises((ValueError, InstrumentNameError), match=message):
        Selection.of(**criteria)
