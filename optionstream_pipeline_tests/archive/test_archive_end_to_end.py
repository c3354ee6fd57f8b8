"""A simulator run with gaps and dropped connections, captured into the real broker and archived in
three passes (two while capture runs): the Parquet rows are the topic's records, exploded, exactly.

One scenario, shared by the tests of this module (it takes about half a minute).
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.archive.layout import hour_of
from optionstream_pipeline.archive.partition import PartitionReport
from optionstream_pipeline.archive.run import archive_store, archive_topic
from optionstream_pipeline.archive.schema import ARCHIVE_SCHEMA, COLUMNS
from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline.config import Settings
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.archive.conftest import archive_rows, expected_rows
from optionstream_pipeline_tests.capture.conftest import capture_settings, running_capture, wait_subscribed
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
PARTITIONS = 4


@dataclass
class ArchivedRun:
    settings: Settings
    store: ArchiveStore
    records: list[TopicRecord]  # the whole topic, as a consumer reads it
    passes: list[list[PartitionReport]]


@pytest.fixture(scope="module")
def archived_run(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ArchivedRun]:
    topic = f"test-archive-{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=-1)])[topic].result(30)
    root = tmp_path_factory.mktemp("archive")
    with SimulatorThread(SimulatorSettings(max_instruments=16, events_per_second=300)) as sim:
        instruments = sim.market.instruments()[:12]
        target = instruments[5]
        settings = capture_settings(
            sim.url,
            kafka_bootstrap,
            topic,
            **{"archive.path": str(root), "archive.max_records_per_file": 400, "archive.row_group_rows": 1024},
        )
        passes = []
        with running_capture(settings, instruments) as capture:
            wait_subscribed(capture, len(instruments))
            wait_until(lambda: capture.engine.stats().delivered >= 500, 20, message="500 records delivered")
            passes.append(archive_topic(settings))
            for number in (1, 2):
                sim.faults.skip_change(target, "100ms")
                wait_until(lambda n=number: capture.engine.stats().gaps == n, 20, message=f"gap {number}")
                sim.faults.drop()
                wait_until(lambda n=number: capture.engine.stats().reconnects == n, 20, message=f"reconnect {number}")
                wait_subscribed(capture, len(instruments))
            passes.append(archive_topic(settings))
            wait_until(lambda: capture.engine.stats().delivered >= 2500, 30, message="2500 records delivered")
            final = capture.stop()
        passes.append(archive_topic(settings))
        with TopicLog(kafka_bootstrap, topic) as log:
            records = log.read_until(lambda rs: len(rs) >= final.delivered, 30, "every delivered record")
    yield ArchivedRun(settings, archive_store(settings), records, passes)


def test_the_archive_holds_exactly_the_topic_exploded(archived_run: ArchivedRun) -> None:
    records = archived_run.records
    kinds = {r.record.type for r in records}
    assert {"snapshot", "change", "gap", "disconnect"} <= kinds  # the scenario has what it should
    expected = [
        row for message in sorted(records, key=lambda r: (r.partition, r.offset)) for row in expected_rows(message)
    ]
    actual = [
        {key: value for key, value in row.items() if key != "book_time"} for row in archive_rows(archived_run.store)
    ]
    assert len(actual) == len(expected)
    assert actual == expected  # every column of every row, in order


def test_every_column_is_declared_once_with_its_meaning(archived_run: ArchivedRun) -> None:
    file = archived_run.store.live_files()[0]
    schema = pq.read_schema(archived_run.store.root / file.path)
    assert [field.name for field in schema] == [name for name, _, _ in COLUMNS]
    for field in schema:
        assert field.type == ARCHIVE_SCHEMA.field(field.name).type, field.name
        assert field.metadata[b"description"], field.name
    assert str(schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("symbol").type).startswith("dictionary<values=string")


def test_book_time_never_goes_back_and_decides_the_hour(archived_run: ArchivedRun) -> None:
    by_partition: dict[int, list[dict]] = defaultdict(list)
    for row in archive_rows(archived_run.store):
        by_partition[row["kafka_partition"]].append(row)
    for partition, rows in by_partition.items():
        times = [row["book_time"] for row in rows]
        assert times == sorted(times), f"partition {partition}"
        for row in rows:
            assert row["book_time"] >= row["timestamp"]
    for file in archived_run.store.live_files():
        table = archived_run.store.read(file)
        hours = {hour_of(int(time.timestamp() * 1_000_000)) for time in table["book_time"].to_pylist()}
        assert hours == {file.hour_start_us}, file.path


def test_files_cover_each_partition_from_offset_zero_without_hole_or_overlap(archived_run: ArchivedRun) -> None:
    store = archived_run.store
    for partition in range(PARTITIONS):
        files = store.live_files(archived_run.settings.kafka.topic, partition)
        assert files and files[0].first_offset == 0
        for before, after in itertools.pairwise(files):
            assert after.first_offset == before.last_offset + 1, (before.name, after.name)
        for file in files:
            offsets = store.read(file)["kafka_offset"].to_pylist()
            assert (min(offsets), max(offsets)) == (file.first_offset, file.last_offset)
            assert len(set(offsets)) == file.records  # every record of the range, none twice
            assert file.records <= 400  # archive.max_records_per_file
        topic_last = max(r.offset for r in archived_run.records if r.partition == partition)
        assert files[-1].last_offset == topic_last
    assert all(not path.name.endswith(".tmp") for path in Path(store.root).rglob("*"))


def test_rows_are_sorted_by_instrument_then_offset_within_each_file(archived_run: ArchivedRun) -> None:
    for file in archived_run.store.live_files():
        rows = archived_run.store.read(file).select(["symbol", "kafka_offset"]).to_pylist()
        keys = [(row["symbol"], row["kafka_offset"]) for row in rows]
        assert keys == sorted(keys), file.path


def test_a_pass_with_nothing_new_writes_nothing_and_the_group_shows_the_lag(archived_run: ArchivedRun) -> None:
    settings = archived_run.settings
    before = archived_run.store.files()
    again = archive_topic(settings)
    assert archived_run.store.files() == before
    assert [report.records for report in again] == [0] * PARTITIONS
    assert all(report.plan == "continuing" and report.lag == 0 for report in again)
    consumer = Consumer({"bootstrap.servers": settings.kafka.brokers[0], "group.id": settings.archive.group_id})
    try:
        committed = consumer.committed([TopicPartition(settings.kafka.topic, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        consumer.close()
    store = archived_run.store
    for partition in committed:
        assert partition.offset == store.archived(settings.kafka.topic, partition.partition).next_offset
    # The three passes while and after capture ran: each archived part of the topic, together all of it.
    assert sum(report.records for one_pass in archived_run.passes for report in one_pass) == len(archived_run.records)
