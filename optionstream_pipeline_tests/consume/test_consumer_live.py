"""The book consumer against the real thing: the simulator, capture and the real broker.

One run shared by the module: a consumer from the earliest record and one started mid-stream
(``latest``) follow capture through a gap and a dropped connection; then the market is frozen and
both are read until they reach the exchange's final books.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.consume.books import WAITING
from optionstream_pipeline.consume.consumer import BookConsumer, BookUpdate
from optionstream_pipeline.consume.selection import Selection
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.capture.conftest import capture_settings, running_capture, wait_subscribed
from optionstream_pipeline_tests.support.waiting import wait_until

INTERVAL = "100ms"


@dataclass(frozen=True)
class Seen:
    """An update as it was when handed out (the book object goes on changing)."""

    instrument: str
    record_type: str
    change_id: int | None
    reliable: bool
    why: str | None
    bids: dict[float, float]
    asks: dict[float, float]

    @classmethod
    def of(cls, update: BookUpdate) -> Seen:
        book = update.book
        return cls(book.instrument, update.record.type, book.change_id, book.reliable, book.why,
                   dict(book.bids), dict(book.asks))  # fmt: skip


@dataclass
class Followed:
    consumer: BookConsumer
    seen: dict[str, list[Seen]] = field(default_factory=lambda: defaultdict(list))

    def drain(self) -> None:
        for update in self.consumer.updates(0.05):
            self.seen[update.book.instrument].append(Seen.of(update))


@dataclass
class LiveRun:
    sim: SimulatorThread
    instruments: list[str]
    target: str  # the instrument given a gap
    earliest: Followed
    latest: Followed
    puts: Followed  # earliest, puts only
    final: dict[str, tuple[int, dict, dict]]


@pytest.fixture(scope="module")
def live_run(kafka_bootstrap: str, kafka_admin: AdminClient) -> Iterator[LiveRun]:
    topic = f"test-consume-{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=-1)])[topic].result(30)
    with SimulatorThread(SimulatorSettings(max_instruments=16, events_per_second=300)) as sim:
        instruments = sim.market.instruments()[:12]
        target = instruments[3]
        settings = capture_settings(sim.url, kafka_bootstrap, topic)
        earliest = Followed(BookConsumer(kafka_bootstrap, topic, "earliest"))
        puts = Followed(BookConsumer(kafka_bootstrap, topic, "earliest", select=Selection.of(kinds=["put"])))
        followers = [earliest, puts]

        def follow_until(condition, timeout: float, message: str) -> None:
            def step() -> bool:
                for follower in followers:
                    follower.drain()
                return condition()

            wait_until(step, timeout, interval=0, message=message)

        with running_capture(settings, instruments) as capture:
            wait_subscribed(capture, len(instruments))
            follow_until(lambda: capture.engine.stats().messages_in >= 400, 20, "400 book messages in")
            latest = Followed(BookConsumer(kafka_bootstrap, topic, "latest"))
            followers.append(latest)
            follow_until(lambda: len(latest.seen) >= 3, 20, "the mid-stream consumer seeing updates")
            sim.faults.skip_change(target, INTERVAL)
            follow_until(lambda: capture.engine.stats().gaps == 1, 20, "the gap")
            sim.faults.drop()
            follow_until(lambda: capture.engine.stats().reconnects == 1, 20, "the reconnect")
            wait_subscribed(capture, len(instruments))
            sim.market.pause()
            wait_until(sim.market.is_settled, 10, message="the simulator flushed its last updates")
            final = {name: sim.market.book(name, INTERVAL) for name in instruments}
            final_state = {name: (book.change_id, book.bids, book.asks) for name, book in final.items()}

            def at_final(follower: Followed, names: list[str]) -> bool:
                books = follower.consumer.books
                return all(name in books and books[name].change_id == final[name].change_id for name in names)

            put_names = [name for name in instruments if name.endswith("-P")]
            follow_until(
                lambda: at_final(earliest, instruments) and at_final(latest, instruments) and at_final(puts, put_names),
                30,
                "every consumer at the final books",
            )
            yield LiveRun(sim, instruments, target, earliest, latest, puts, final_state)
        for follower in followers:
            follower.consumer.close()


def truth_at(run: LiveRun, name: str, change_id: int) -> tuple[dict, dict] | None:
    truth = run.sim.market.book_at(name, INTERVAL, change_id)
    return None if truth is None else (truth.bids, truth.asks)


def test_every_reliable_update_equals_the_exchanges_book_at_its_change_id(live_run: LiveRun) -> None:
    compared = 0
    for name, seen in live_run.earliest.seen.items():
        for state in seen:
            if state.reliable and state.record_type in ("snapshot", "change"):
                truth = truth_at(live_run, name, state.change_id)
                if truth is not None:
                    assert (state.bids, state.asks) == truth, f"{name} at change_id {state.change_id}"
                    compared += 1
    assert compared >= 400
    for name in live_run.instruments:
        book = live_run.earliest.consumer.books[name]
        assert book.reliable and (book.change_id, book.bids, book.asks) == live_run.final[name]


def test_a_gap_and_a_dropped_connection_make_books_unreliable_until_their_resync(live_run: LiveRun) -> None:
    seen = live_run.earliest.seen[live_run.target]
    whys = [state.why for state in seen]
    gap = next(i for i, why in enumerate(whys) if why and why.startswith("gap: "))
    assert seen[gap].record_type == "gap"
    resync = next(i for i in range(gap, len(seen)) if seen[i].record_type == "snapshot")
    assert all(not state.reliable for state in seen[gap:resync]) and seen[resync].reliable
    for name in live_run.instruments:  # the drop: every book says so, then its reconnect snapshot
        states = live_run.earliest.seen[name]
        drop = next(i for i, s in enumerate(states) if s.why and s.why.startswith("disconnect: "))
        assert states[drop].record_type == "disconnect"
        after = next(i for i in range(drop, len(states)) if states[i].record_type == "snapshot")
        assert all(not s.reliable for s in states[drop:after]) and states[after].reliable


def test_a_consumer_started_mid_stream_waits_for_each_snapshot_then_equals_the_exchange(live_run: LiveRun) -> None:
    waited = 0
    for name in live_run.instruments:
        seen = live_run.latest.seen[name]
        first = next(i for i, state in enumerate(seen) if state.record_type == "snapshot")
        assert all(state.why == WAITING and not state.bids for state in seen[:first]), name
        waited += first
        for state in seen[first:]:
            if state.reliable and state.record_type in ("snapshot", "change"):
                truth = truth_at(live_run, name, state.change_id)
                assert truth is None or (state.bids, state.asks) == truth, f"{name} at {state.change_id}"
        book = live_run.latest.consumer.books[name]
        assert book.reliable and (book.change_id, book.bids, book.asks) == live_run.final[name]
    assert waited > 0  # changes came before the snapshots: the mid-stream case happened


def test_a_selection_rebuilds_only_the_books_it_names(live_run: LiveRun) -> None:
    puts = [name for name in live_run.instruments if name.endswith("-P")]
    assert sorted(live_run.puts.consumer.books) == sorted(puts) and puts
    for name in puts:
        book = live_run.puts.consumer.books[name]
        assert (book.change_id, book.bids, book.asks) == live_run.final[name]
