"""A consumer started from a past time: the archive's books then, Kafka from right after the archive's
rows, and from that time on the same as a consumer that read the topic from its first record.

Runs on the session's archive scenario (:mod:`optionstream_pipeline_tests.archive.scenario`): gaps,
dropped connections, a capture session killed without markers and one after it, all archived.
"""

from __future__ import annotations

import random
import re
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline.consume.consumer import BookConsumer
from optionstream_pipeline.consume.history import ArchiveMismatch, LastArchived
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.query.database import NoArchive
from optionstream_pipeline_tests.archive.scenario import ArchivedRun
from optionstream_pipeline_tests.support.books import T0, Stream
from optionstream_pipeline_tests.support.waiting import wait_until

NAME = "BTC-27JUN25-100000-C"

US = timedelta(microseconds=1)
State = tuple  # an update as handed out: where, and the book then

Consumed = tuple[dict[int, list[tuple[int, State]]], dict[str, State]]  # per partition (book_time, state); books


def book_state(book) -> State:
    return (book.instrument, book.change_id, book.why, sorted(book.bids.items()), sorted(book.asks.items()),
            book.exchange_timestamp_ms, book.local_timestamp_us, book.capture_id, book.stream)  # fmt: skip


def book_times(run: ArchivedRun) -> dict[tuple[int, int], int]:
    """Each record's ``book_time`` (µs), by (partition, offset): the partition's latest timestamp so far."""
    times: dict[tuple[int, int], int] = {}
    latest: dict[int, int] = defaultdict(int)
    for record in sorted(run.records, key=lambda r: (r.partition, r.offset)):
        latest[record.partition] = max(latest[record.partition], record.timestamp_ms * 1000)
        times[record.partition, record.offset] = latest[record.partition]
    return times


def consume_to_end(consumer: BookConsumer, run: ArchivedRun) -> Consumed:
    times = book_times(run)
    ends = {partition: offset + 1 for partition, offset in sorted(times)}
    updates: dict[int, list[tuple[int, State]]] = defaultdict(list)

    def at_end() -> bool:
        for update in consumer.updates(0.05):
            state = (update.offset, update.record.type, *book_state(update.book))
            updates[update.partition].append((times[update.partition, update.offset], state))
        return all(consumer.positions().get(p) == end for p, end in ends.items())

    wait_until(at_end, 60, interval=0, message="the consumer at the end of every partition")
    return dict(updates), {name: book_state(book) for name, book in consumer.books.items()}


@pytest.fixture(scope="module")
def from_the_beginning(archived_run: ArchivedRun, kafka_bootstrap: str) -> Consumed:
    with BookConsumer(kafka_bootstrap, archived_run.settings.kafka.topic, "earliest") as consumer:
        return consume_to_end(consumer, archived_run)


def as_time(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC) + (us % 1_000_000) * US


def sample_moments(run: ArchivedRun, count: int) -> list[datetime]:
    """Random instants; at and just after every gap and resync; and at and just after the first record
    of the session that followed the killed one (its books then wait for their snapshots)."""
    times = book_times(run)
    rng = random.Random(11)
    first, last = min(times.values()), max(times.values())
    moments = [rng.randrange(first, last) for _ in range(count)]
    gaps, resyncs = [], []
    for record in run.records:
        if record.record.type == "gap":
            gaps.append(times[record.partition, record.offset])
        elif getattr(record.record, "reason", None) in ("resync", "reconnect"):
            resyncs.append(times[record.partition, record.offset])
    rng.shuffle(resyncs)
    order = sorted(run.records, key=lambda r: times[r.partition, r.offset])
    last_session = order[-1].record.capture.id
    firsts = {}  # the last session's first record in each partition
    for record in order:
        if record.record.capture.id == last_session:
            firsts.setdefault(record.partition, times[record.partition, record.offset])
    special = [*gaps, *resyncs[:6], *firsts.values()]
    return [as_time(us) for us in moments] + [as_time(us + delta) for us in special for delta in (0, 1)]


def test_from_a_past_time_equals_from_the_beginning_from_that_time_on(
    archived_run: ArchivedRun, kafka_bootstrap: str, from_the_beginning: Consumed
) -> None:
    all_updates, all_books = from_the_beginning
    topic, archive = archived_run.settings.kafka.topic, archived_run.settings.archive.path
    reasons: set[str] = set()
    for moment in sample_moments(archived_run, 20):
        moment_us = int(moment.timestamp() * 1_000_000)
        with BookConsumer(kafka_bootstrap, topic, moment, archive=archive) as consumer:
            seeded = {name: book_state(book) for name, book in consumer.books.items()}
            updates, books = consume_to_end(consumer, archived_run)
        expected = {p: [u for u in found if u[0] > moment_us] for p, found in all_updates.items()}
        assert {p: u for p, u in updates.items() if u} == {p: u for p, u in expected.items() if u}, f"from {moment}"
        assert books == all_books, f"from {moment}"
        reasons |= {state[2].split(" ")[0] for state in seeded.values() if state[2]}
    # Seeded books waiting for their reconnect (the backoff makes that window last). A gap's resync may
    # land in the gap's own millisecond, so that case is test_handover's, on an archive that has it.
    assert "disconnect:" in reasons


def test_starting_before_the_archive_or_without_it_is_refused_saying_why(
    archived_run: ArchivedRun, kafka_bootstrap: str
) -> None:
    topic, archive = archived_run.settings.kafka.topic, archived_run.settings.archive.path
    with pytest.raises(NoArchive, match="starts at"):
        BookConsumer(kafka_bootstrap, topic, datetime(2020, 1, 1, tzinfo=UTC), archive=archive)
    with pytest.raises(ValueError, match="needs the archive"):
        BookConsumer(kafka_bootstrap, topic, datetime.now(UTC))
    with pytest.raises(NoArchive, match="not another-topic"):
        BookConsumer(kafka_bootstrap, "another-topic", datetime.now(UTC), archive=archive)


def kafka_record(run: ArchivedRun, offset: int) -> TopicRecord:
    return next(r for r in run.records if r.partition == 0 and r.offset == offset)


def test_the_join_with_kafka_is_checked_record_for_record(archived_run: ArchivedRun) -> None:
    archived = kafka_record(archived_run, 5)
    last = LastArchived(0, 5, archived.record.instrument, archived.record.type, archived.record.local_timestamp_us,
                        archived.record.capture.id, archived.timestamp_ms * 1000)  # fmt: skip
    assert last.check(archived) is None
    assert last.check(kafka_record(archived_run, 6)) is None  # the archived one is gone, the next is there
    assert last.check(kafka_record(archived_run, 9)) == (
        "gap: offsets 6 to 8 of partition 0 are no longer in Kafka (retention); the archive has what it read of "
        "them (optionstream query)"
    )
    with pytest.raises(ArchiveMismatch, match=r"offset 5 holds .* in Kafka but .* in the archive"):
        LastArchived(0, 5, "BTC-1JAN30-1-C", "change", 1, "x", 0).check(archived)
    with pytest.raises(ArchiveMismatch, match="now starts at offset 4, before the archive's 5"):
        last.check(kafka_record(archived_run, 4))


def test_an_archive_of_a_topic_since_recreated_is_refused_when_the_consumer_is_made(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    topic = f"test-recreated-{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)])[topic].result(30)
    archived, now = Stream(0), Stream(0)  # the topic as archived, and as it is after being recreated
    for stream, at in ((archived, 0), (now, 5)):
        stream.snapshot(NAME, at, 10, bids=[("new", 0.05, 1.0)])
        stream.change(NAME, at + 1000, 11, 10, bids=[("change", 0.05, 2.0)])
    archived.write(ArchiveStore(tmp_path), topic=topic)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for record in now.records:
        producer.produce(topic, record.value, NAME, partition=0, timestamp=record.timestamp_ms)
    assert producer.flush(30) == 0
    kafka, archive = (f"a snapshot of {NAME} received at {(T0 + at) * 1000} µs" for at in (5, 0))
    with pytest.raises(
        ArchiveMismatch, match=re.escape(f"offset 0 holds {kafka} in Kafka but {archive} in the archive")
    ):
        BookConsumer(kafka_bootstrap, topic, as_time((T0 + 500) * 1000), archive=tmp_path)
