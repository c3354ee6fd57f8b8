"""Kafka's retention removing records the archive has not read yet: a hole, reported and never hidden.

Needs Apache Kafka: Tansu cannot delete records (``DeleteRecords``), so this is skipped on the
embedded broker; the decision itself is unit-tested on both (``test_archive_progress.py``).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.archive import audit
from optionstream_pipeline.archive.run import archive_store, archiver
from optionstream_pipeline.config import settings_from_mapping
from optionstream_pipeline_tests.archive.conftest import archive_rows, expected_rows, produce, topic_values
from optionstream_pipeline_tests.support.kafka_reading import TopicLog

pytestmark = [pytest.mark.slow, pytest.mark.real_kafka(reason="deleting records (retention)")]


def test_records_removed_unread_are_a_hole_the_check_names_and_the_archive_goes_on(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    # The test records are stamped a year back: no time-based retention, only the deletion below.
    kafka_topic = f"test-retention-{uuid.uuid4().hex[:8]}"
    topic = NewTopic(kafka_topic, num_partitions=1, replication_factor=-1, config={"retention.ms": "-1"})
    kafka_admin.create_topics([topic])[kafka_topic].result(30)
    settings = settings_from_mapping({
        "kafka": {"brokers": [kafka_bootstrap], "topic": kafka_topic, "partitions": 1},
        "archive": {"path": str(tmp_path / "archive")},
    })  # fmt: skip
    values = topic_values(500)
    produce(kafka_bootstrap, kafka_topic, values[:300])
    assert archiver(settings, 0).run().records == 300
    produce(kafka_bootstrap, kafka_topic, values[300:])
    [deleted] = kafka_admin.delete_records([TopicPartition(kafka_topic, 0, 400)]).values()
    assert deleted.result(30).low_watermark == 400  # offsets 300-399: gone before the archive read them

    report = archiver(settings, 0).run()
    assert report.hole == (300, 399) and "retention" in report.plan
    assert (report.first_offset, report.last_offset) == (400, 499)
    store = archive_store(settings)
    [hole] = store.holes()
    assert (hole["partition"], hole["first_offset"], hole["last_offset"]) == (0, 300, 399)
    verdict = audit.offset_continuity(0, store.live_files(kafka_topic, 0), store.holes())
    assert not verdict.passed
    assert verdict.description == (
        "partition 0 (incarnation 0): offsets 300-399 removed by Kafka's retention before the archive read them"
    )
    with TopicLog(kafka_bootstrap, kafka_topic) as log:  # what is left in Kafka, from 400 on
        left = log.read_until(lambda records: len(records) >= 100, 30, "the records retention kept")
    archived = [row for row in archive_rows(store) if row["kafka_offset"] >= 400]
    expected = [row for message in sorted(left, key=lambda r: r.offset) for row in expected_rows(message)]
    assert [{k: v for k, v in row.items() if k != "book_time"} for row in archived] == expected
    assert len({row["kafka_offset"] for row in archive_rows(store)}) == 400  # 0-299 kept, 400-499 added
