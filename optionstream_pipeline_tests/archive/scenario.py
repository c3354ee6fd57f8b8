"""The archive scenario, shared by the archive and query tests of the session (about a minute).

A simulator run with gaps and dropped connections captured into the real broker and archived in
passes while capture runs; then a second capture session killed with SIGKILL (so it writes no
markers) and a third, short one. Loaded as a plugin by the root ``conftest.py`` so that it runs
once however many test modules use it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.archive.partition import PartitionReport
from optionstream_pipeline.archive.run import archive_store, archive_topic
from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline.config import Settings
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.capture.conftest import capture_settings, running_capture, wait_subscribed
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until

PARTITIONS = 4


@dataclass
class ArchivedRun:
    settings: Settings
    store: ArchiveStore
    records: list[TopicRecord]  # the whole topic, as a consumer reads it
    passes: list[list[PartitionReport]]


@pytest.fixture(scope="session")
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
            capture.stop()
        passes.append(archive_topic(settings))
        with TopicLog(kafka_bootstrap, topic) as log:
            log.read_until(lambda rs: len(rs) >= total_archived(passes, topic), 30, "the first session's records")
            kill_a_capture_session(settings, instruments[:6], log)
            with running_capture(settings, instruments[:8]) as capture:  # a third session, after the crash
                wait_subscribed(capture, 8)
                wait_until(lambda: capture.engine.stats().delivered >= 300, 20, message="the third session writing")
            passes.append(archive_topic(settings))
            records = log.read_until(lambda rs: len(rs) >= total_archived(passes, topic), 30, "every archived record")
    yield ArchivedRun(settings, archive_store(settings), records, passes)


def total_archived(passes: list[list[PartitionReport]], topic: str) -> int:
    """Records of ``topic`` the passes archived (each pass archives the ticker topic too)."""
    return sum(report.records for one_pass in passes for report in one_pass if report.topic == topic)


def kill_a_capture_session(settings: Settings, instruments: list[str], log: TopicLog) -> str:
    """``optionstream capture`` in a process of its own, killed (SIGKILL) once it wrote: no markers."""
    config = settings.model_dump()
    config["deribit"]["instruments"] = instruments
    config["capture"]["metrics"]["enabled"] = False
    path = f"{settings.archive.path}-capture.yaml"
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    known = {r.record.capture.id for r in log.records}
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPTIONSTREAM_")}
    command = [sys.executable, "-m", "optionstream_pipeline.cli", "--log-level", "WARNING", "capture", "--config", path]
    process = subprocess.Popen(command, env=env)
    try:
        log.read_until(
            lambda rs: sum(1 for r in rs if r.record.capture.id not in known) >= 100, 30, "the killed session's records"
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    return next(r.record.capture.id for r in log.records if r.record.capture.id not in known)
