"""The archive asset in process (one partition key, one Kafka partition) and its schedule, tick by tick."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from dagster import (
    AssetCheckSeverity,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    RunsFilter,
    build_schedule_context,
    instance_for_test,
    materialize,
)

from optionstream_pipeline.archive.schema import COLUMNS
from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline.orchestration import schedules
from optionstream_pipeline.orchestration.assets import ARCHIVE_ASSET_KEY, build_archive_asset, build_archive_checks
from optionstream_pipeline.orchestration.assets.capture.topic import deribit_option_books
from optionstream_pipeline.orchestration.jobs import ARCHIVE_JOB_NAME, build_archive_job
from optionstream_pipeline.orchestration.schedules import ARCHIVE_SCHEDULE_NAME, build_archive_schedule
from optionstream_pipeline_tests.archive.conftest import produce, topic_values
from optionstream_pipeline_tests.orchestration.support import settings_resource

PARTITIONS = 3


def test_a_materialization_archives_its_kafka_partition_and_says_what_it_holds(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    topic = f"test-archive-asset-{tmp_path.name[-8:]}"
    kafka_admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=-1)])[topic].result(30)
    produce(kafka_bootstrap, topic, topic_values(900))
    optionstream = settings_resource(
        **{"kafka.brokers": [kafka_bootstrap], "kafka.topic": topic, "kafka.partitions": PARTITIONS,
           "archive.path": str(tmp_path / "archive"), "archive.max_records_per_file": 100}
    )  # fmt: skip
    archive = build_archive_asset(PARTITIONS)
    definitions = [archive, deribit_option_books, *build_archive_checks(PARTITIONS)]
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            definitions, selection=[ARCHIVE_ASSET_KEY], partition_key="1",
            resources={"optionstream": optionstream}, instance=instance,
        )  # fmt: skip
        assert result.success
        [materialization] = result.asset_materializations_for_node(archive.op.name)
        checked = {e.check_name: e for e in result.get_asset_check_evaluations()}  # each run checks its partition
        ArchiveStore(tmp_path / "archive").record_hole(topic, 1, 0, 5000, 5099, "removed by retention")
        again = materialize(
            definitions, selection=[ARCHIVE_ASSET_KEY], partition_key="1",
            resources={"optionstream": optionstream}, instance=instance,
        )  # fmt: skip
        [second] = again.asset_materializations_for_node(archive.op.name)
        rechecked = {e.check_name: e for e in again.get_asset_check_evaluations()}
    assert sorted(checked) == ["change_id_continuity", "closed_hours_compacted", "offset_continuity"]
    assert all(evaluation.passed for evaluation in checked.values())
    assert checked["offset_continuity"].description.startswith("partition 1: ")
    assert checked["offset_continuity"].metadata["records"].value == materialization.metadata["records"].value
    assert (
        checked["change_id_continuity"].metadata["records_checked"].value == materialization.metadata["records"].value
    )
    assert not rechecked["offset_continuity"].passed
    assert rechecked["offset_continuity"].severity == AssetCheckSeverity.ERROR
    assert rechecked["offset_continuity"].description == (
        "partition 1 (incarnation 0): offsets 5000-5099 removed by Kafka's retention before the archive read them"
    )
    metadata = {key: entry.value for key, entry in materialization.metadata.items()}
    assert materialization.partition == "1"
    assert metadata["records"] > 100 and metadata["files"] >= -(-metadata["records"] // 100)  # 100 records a file
    assert metadata["rows"] >= metadata["records"] and metadata["bytes"] > 0
    assert metadata["dagster/row_count"] == metadata["rows"]  # all the partition holds, after one run
    assert (metadata["first_offset"], metadata["last_offset"]) == (0, metadata["records"] - 1)
    assert metadata["lag"] == 0 and metadata["incarnation"] == 0
    assert [column.name for column in metadata["dagster/column_schema"].columns] == [name for name, _, _ in COLUMNS]
    assert all(column.description for column in metadata["dagster/column_schema"].columns)
    others = {key: entry.value for key, entry in second.metadata.items()}
    assert (others["records"], others["files"], others["dagster/row_count"]) == (0, 0, metadata["rows"])
    assert others["plan"] == "continuing"


def test_the_schedule_launches_every_partition_not_still_running(monkeypatch: pytest.MonkeyPatch) -> None:
    optionstream = settings_resource(**{"kafka.partitions": PARTITIONS})
    archive = build_archive_asset(PARTITIONS)
    job = build_archive_job(archive.partitions_def, tickers=False)  # the book asset alone
    defs = Definitions(
        assets=[archive, deribit_option_books],
        jobs=[job],
        schedules=[build_archive_schedule(optionstream.settings(), job)],
        resources={"optionstream": optionstream},
    )
    schedule = defs.resolve_schedule_def(ARCHIVE_SCHEDULE_NAME)
    tick = datetime(2026, 12, 1, 12, 5, tzinfo=UTC)
    with instance_for_test() as instance:

        def evaluate():
            context = build_schedule_context(
                instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
            )
            return schedule.evaluate_tick(context)

        requests = evaluate().run_requests
        assert [request.partition_key for request in requests] == ["0", "1", "2"]
        assert len({request.run_key for request in requests}) == 3
        for key in ("0", "2"):
            instance.add_run(_run(key))
        assert [request.partition_key for request in evaluate().run_requests] == ["1"]
        instance.add_run(_run("1"))
        skipped = evaluate()
        assert not skipped.run_requests
        assert "still being archived by the previous runs: 0, 1, 2" in skipped.skip_message
        # The whole dagster dev tree was killed: its runs stay STARTED with nobody behind them.
        monkeypatch.setattr(schedules, "clock", lambda: time.time() + 121)  # heartbeat_stale_s: 120
        requests = evaluate().run_requests
        assert [request.partition_key for request in requests] == ["0", "1", "2"]
        failed = instance.get_run_records(filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
        assert len(failed) == 3


def _run(key: str) -> DagsterRun:
    return DagsterRun(job_name=ARCHIVE_JOB_NAME, status=DagsterRunStatus.STARTED, tags={"dagster/partition": key})
