"""The archive on S3-compatible object storage (moto's server on loopback): ``archive.path: s3://...``.

End to end through the real broker and the real ``optionstream archive`` process: killed at the
crash points and at random moments, then run to the end, the bucket holds exactly the topic's
rows, the closed hours compacted, and DuckDB's views over the bucket answer as over a local copy.
One writer per partition holds there too, through the lease (no ``flock`` on S3).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import s3fs
import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.archive.faults import (
    AFTER_RENAME,
    BEFORE_COMMIT,
    COMPACTION_MID_REMOVE,
    COMPACTION_WRITTEN,
    CRASH_ENV,
    MID_WRITE,
)
from optionstream_pipeline.archive.layout import ArchiveFile, hour_of
from optionstream_pipeline.archive.progress import Fingerprint
from optionstream_pipeline.archive.schema import ARCHIVE_SCHEMA
from optionstream_pipeline.archive.store import ArchiveStore, FileState, PartitionBusy
from optionstream_pipeline.query.database import open_archive
from optionstream_pipeline_tests.archive.conftest import START_MS, archive_rows, expected_rows, produce, topic_values
from optionstream_pipeline_tests.archive.test_archive_crash import archive_command
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.object_store import SECRET_KEY, ObjectStore, object_store
from optionstream_pipeline_tests.support.waiting import wait_until

PARTITIONS = 3
TOTAL, STEP = 18_000, 900  # two hours of book time: the first hour closes half-way
LEASE_S = 2.0  # a killed run's lease holds the next run back at most this long
NAMED_KILLS = [
    (4_000, MID_WRITE, 2),
    (4_000, AFTER_RENAME, 3),
    (4_000, BEFORE_COMMIT, 1),
    (10_000, COMPACTION_WRITTEN, 1),  # the first hour just closed
    (10_000, COMPACTION_MID_REMOVE, 2),
]
RANDOM_KILLS = 3
MAX_TRIALS = 12


@pytest.fixture(scope="module")
def s3() -> Iterator[ObjectStore]:
    with object_store() as store:
        yield store


def _config(path: Path, bootstrap: str, topic: str, location: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"brokers": [bootstrap], "topic": topic},
                "deribit": {"tickers": False},  # a book topic alone (its ticker topic is never created)
                "archive": {"path": location, "max_records_per_file": 150, "row_group_rows": 1024, "lease_s": LEASE_S},
            }
        )
    )
    return path


def _leases_over(location: str) -> bool:
    """Whether every partition lease under ``location`` is released or past its term (as a killed
    run leaves it: the next run may take it over)."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for key in fs.find(f"{location.removeprefix('s3://')}/_locks", refresh=True):
        try:
            if json.loads(fs.cat_file(key))["expires"] >= time.time():
                return False
        except FileNotFoundError:  # released since the listing
            continue
    return True


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_killed_again_and_again_the_bucket_holds_exactly_the_topics_rows(
    kafka_bootstrap: str, s3: ObjectStore, tmp_path: Path
) -> None:
    topic = f"test-archive-s3-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=-1)])[topic].result(30)
    values = topic_values(TOTAL)
    location = s3.location(f"{topic}/archive")
    config = _config(tmp_path / "config.yaml", kafka_bootstrap, topic, location)
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPTIONSTREAM_")} | s3.env
    produced = 0

    def produce_up_to(count: int) -> None:
        nonlocal produced
        produce(kafka_bootstrap, topic, values[produced:count])
        produced = max(produced, count)

    def run(extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        wait_until(lambda: _leases_over(location), 10, 0.1, "the killed run's lease past its term")
        return subprocess.Popen(
            archive_command(config), env={**env, **(extra_env or {})}, stderr=subprocess.PIPE, text=True
        )

    outcomes: list[str] = []
    for count, point, times in NAMED_KILLS:
        produce_up_to(count)
        process = run({CRASH_ENV: f"{point}:{times}"})
        _, stderr = process.communicate(timeout=120)
        outcomes.append(f"{point}:{times} -> {process.returncode}")
        assert process.returncode == -signal.SIGKILL, (outcomes, stderr)  # the point was reached
    rng, landed = random.Random(5), 0
    for _ in range(MAX_TRIALS):
        produce_up_to(min(TOTAL, produced + STEP))
        process = run()
        time.sleep(rng.uniform(0.8, 2.0))  # the moment of the kill is the random part
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        outcomes.append(f"random -> {process.returncode}")
        landed += process.returncode == -signal.SIGKILL
        if landed == RANDOM_KILLS:
            break
    assert landed == RANDOM_KILLS, outcomes
    produce_up_to(TOTAL)
    final = run()
    _, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr

    store = ArchiveStore(location)
    with TopicLog(kafka_bootstrap, topic) as log:
        records = log.read_until(lambda rs: len(rs) >= TOTAL, 60, "the whole topic")
    expected = [row for message in sorted(records, key=lambda r: (r.partition, r.offset))
                for row in expected_rows(message)]  # fmt: skip
    actual = [{k: v for k, v in row.items() if k != "book_time"} for row in archive_rows(store)]
    assert len(actual) == len(expected), outcomes
    assert actual == expected, outcomes
    files = store.files()
    assert files == store.live_files()  # no compaction input left behind
    last_hour = hour_of(max(file.hour_start_us for file in files))
    for partition in range(PARTITIONS):
        closed = {f.hour_start_us for f in files if f.partition == partition} - {last_hour}
        assert closed and all(
            len([f for f in files if f.partition == partition and f.hour_start_us == hour]) == 1 for hour in closed
        )
    assert store.checkpoints(topic, 0, 0), "the closed hour's checkpoint is in the bucket"

    # DuckDB over the bucket answers as over a local archive of the same topic.
    local = _config(tmp_path / "local.yaml", kafka_bootstrap, topic, str(tmp_path / "local"))
    assert subprocess.run(archive_command(local), env=env, timeout=120).returncode == 0
    start = datetime.fromtimestamp(START_MS / 1000, UTC)
    moments = [start + timedelta(minutes=minutes) for minutes in (20, 31, 75, 119)]
    over_s3, over_disk = open_archive(location), open_archive(tmp_path / "local")
    for connection in (over_s3, over_disk):
        [(rows,)] = connection.execute("SELECT count(*) FROM book").fetchall()
        assert rows == len(expected)
    for moment in moments:
        query = "SELECT * EXCLUDE (as_of) FROM books_at($moment) ORDER BY symbol"
        from_bucket = over_s3.execute(query, {"moment": moment}).fetchall()
        assert from_bucket and from_bucket == over_disk.execute(query, {"moment": moment}).fetchall()
    assert SECRET_KEY not in stderr


STATE = FileState(START_MS * 1000, Fingerprint(0, START_MS, "BTC-27JUN25-60000-C", 1))


def test_a_partition_has_one_writer_on_object_storage(s3: ObjectStore) -> None:
    location = s3.location(f"lease-{uuid.uuid4().hex[:8]}")
    first, second = ArchiveStore(location, lease_s=1.5), ArchiveStore(location, lease_s=1.5)
    with first.partition_lock("t", 0):
        held_by_us = rf"t\+0 is being archived by another run \(.* pid {os.getpid()}, "
        with pytest.raises(PartitionBusy, match=held_by_us), second.partition_lock("t", 0):
            pass
        with second.partition_lock("t", 1):  # another partition: free
            pass
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        lease = f"{location.removeprefix('s3://')}/_locks/t+0.lock"
        first_term_ends = json.loads(fs.cat_file(lease))["expires"]
        # Past the first term, the first run still holds the partition: it renewed its lease.
        wait_until(lambda: json.loads(fs.cat_file(lease))["expires"] > first_term_ends + 1.5, 10, 0.1, "renewals")
        assert time.time() > first_term_ends
        with pytest.raises(PartitionBusy), second.partition_lock("t", 0):
            pass
    with second.partition_lock("t", 0):  # released
        pass


def test_a_dead_runs_lease_is_taken_over_and_a_run_that_lost_its_lease_stops_writing(s3: ObjectStore) -> None:
    location = s3.location(f"lease-{uuid.uuid4().hex[:8]}")
    fs = s3fs.S3FileSystem()
    lease = f"{location.removeprefix('s3://')}/_locks/t+0.lock"
    fs.pipe_file(lease, json.dumps({"holder": "a run killed long ago", "expires": time.time() - 1}).encode())
    store = ArchiveStore(location, lease_s=1.5)
    file = ArchiveFile("t", 0, 0, 0, 0, hour_of(START_MS * 1000))
    with store.partition_lock("t", 0):  # taken over
        store.write(file, ARCHIVE_SCHEMA.empty_table(), STATE)
        # Another run takes the lease over (as after this run stalled past its term): the next
        # renewal finds it gone, and this run writes nothing more.
        fs.pipe_file(lease, json.dumps({"holder": "the run after", "expires": time.time() + 60}).encode())

        def refused() -> bool:
            try:
                store.write(file, ARCHIVE_SCHEMA.empty_table(), STATE)
            except PartitionBusy as exc:
                return "taken over by another run" in str(exc)
            return False

        assert wait_until(refused, 5, 0.1, "the write refused once the lease was taken over")
    assert json.loads(fs.cat_file(lease))["holder"] == "the run after"  # not released by the loser
