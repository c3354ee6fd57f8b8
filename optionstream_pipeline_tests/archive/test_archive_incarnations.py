"""The topic deleted and recreated under the archive (here: the embedded broker restarted empty, as a
demo restarted over its data directory does): the new incarnation is archived beside the old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from optionstream_pipeline.archive.run import archive_store, archive_topic
from optionstream_pipeline.config import Settings, settings_from_mapping
from optionstream_pipeline.kafka.broker import EmbeddedBroker
from optionstream_pipeline_tests.archive.conftest import archive_rows, expected_rows, produce, topic_values
from optionstream_pipeline_tests.support.kafka_reading import TopicLog

pytestmark = pytest.mark.slow
TOPIC = "orderbook.deribit.options"


def settings_for(bootstrap: str, root: Path) -> Settings:
    return settings_from_mapping(
        {"kafka": {"brokers": [bootstrap], "topic": TOPIC, "partitions": 2}, "archive": {"path": str(root)}}
    )


def fill(bootstrap: str, count: int, settings: Settings):
    from optionstream_pipeline.kafka.admin import ensure_topic

    ensure_topic({"bootstrap.servers": bootstrap}, TOPIC, 2, 1)
    produce(bootstrap, TOPIC, topic_values(count))
    with TopicLog(bootstrap, TOPIC) as log:
        return log.read_until(lambda rs: len(rs) >= count, 30, "every record produced")


def test_a_recreated_topic_is_archived_as_a_new_incarnation_beside_the_old(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with EmbeddedBroker() as first_broker:
        settings = settings_for(first_broker.bootstrap, root)
        first = fill(first_broker.bootstrap, 3_000, settings)
        reports = archive_topic(settings)
        assert [report.incarnation for report in reports] == [0, 0]
    old_rows = archive_rows(archive_store(settings))

    with EmbeddedBroker() as second_broker:  # empty: every offset starts again from 0
        settings = settings_for(second_broker.bootstrap, root)
        second = fill(second_broker.bootstrap, 1_200, settings)
        reports = archive_topic(settings)
        assert [report.incarnation for report in reports] == [1, 1]
        assert all(report.new_incarnation and "recreated" in report.plan for report in reports)
        assert all(report.hole is None for report in reports)
        again = archive_topic(settings)  # and the next run goes on in the new incarnation
        assert [(report.incarnation, report.records) for report in again] == [(1, 0), (1, 0)]

    store = archive_store(settings)
    rows = archive_rows(store)
    by_incarnation = {0: [row for row in rows if row["topic_incarnation"] == 0],
                      1: [row for row in rows if row["topic_incarnation"] == 1]}  # fmt: skip
    assert by_incarnation[0] == old_rows  # nothing of the old incarnation lost or overwritten
    assert len(rows) == len(by_incarnation[0]) + len(by_incarnation[1])
    for incarnation, records in ((0, first), (1, second)):
        ordered = sorted(records, key=lambda r: (r.partition, r.offset))
        expected = [row for message in ordered for row in expected_rows(message, incarnation)]
        actual = sorted(by_incarnation[incarnation], key=lambda r: (r["kafka_partition"], r["kafka_offset"],
                                                                    r["side"] or "", r["level"] or 0))  # fmt: skip
        assert [{k: v for k, v in row.items() if k != "book_time"} for row in actual] == expected
    names = {file.name.split("+")[2] for file in store.live_files()}
    assert names == {"0", "1"}  # the incarnation is in every file name
