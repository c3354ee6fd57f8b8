"""Exactly once, proven by killing: ``optionstream archive`` SIGKILLed at random moments and at the named
crash points (a file half written, a file renamed but nothing after it done, files in place but the
group not committed, a compaction with its merged file written or its inputs half removed), again
and again; after a last run the archive holds exactly the topic's rows, its closed hours compacted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
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
from optionstream_pipeline.archive.layout import hour_of
from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline_tests.archive.conftest import archive_rows, expected_rows, produce, topic_values
from optionstream_pipeline_tests.support.kafka_reading import TopicLog

pytestmark = [pytest.mark.slow, pytest.mark.timeout(280)]
PARTITIONS = 3
RANDOM_KILLS = 16  # landed on a running archive; trials that end first do not count
MAX_TRIALS = 60
TOTAL, STEP = 60_000, 600  # two hours of book time: hour boundaries near records 15,000 and 45,000
# (records produced by then, crash point, the n-th time it is reached)
NAMED_KILLS = [
    (12_000, MID_WRITE, 3),
    (12_000, AFTER_RENAME, 2),
    (12_000, AFTER_RENAME, 5),
    (12_000, BEFORE_COMMIT, 1),
    (20_000, COMPACTION_WRITTEN, 1),  # the first hour just closed: its compaction is the first
    (50_000, COMPACTION_MID_REMOVE, 3),  # the second hour just closed
]


def archive_command(config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "optionstream_pipeline.cli",
        "--log-level",
        "WARNING",
        "archive",
        "--config",
        str(config),
    ]


def test_sigkill_at_any_moment_loses_or_doubles_no_row(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"test-archive-crash-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=-1)])[topic].result(30)
    values = topic_values(TOTAL)
    produced = 0

    def produce_up_to(count: int) -> None:
        nonlocal produced
        produce(kafka_bootstrap, topic, values[produced:count])
        produced = max(produced, count)

    root = tmp_path / "archive"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"brokers": [kafka_bootstrap], "topic": topic},
                "archive": {"path": str(root), "max_records_per_file": 150, "row_group_rows": 1024},
            }
        )
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPTIONSTREAM_")}
    rng = random.Random(11)
    outcomes: list[str] = []
    for count, point, times in NAMED_KILLS:
        produce_up_to(count)
        result = subprocess.run(archive_command(config), env={**env, CRASH_ENV: f"{point}:{times}"}, timeout=120)
        outcomes.append(f"{point}:{times} -> {result.returncode}")
        assert result.returncode == -signal.SIGKILL, outcomes  # the point was reached
    landed = 0
    for _ in range(MAX_TRIALS):
        produce_up_to(min(TOTAL, produced + STEP))  # every run has work to do
        process = subprocess.Popen(archive_command(config), env=env)
        time.sleep(rng.uniform(0.4, 1.3))  # the command starts in about 0.7 s; a run's work takes under a second
        process.send_signal(signal.SIGKILL)
        code = process.wait(30)
        outcomes.append(f"random -> {code}")
        landed += code == -signal.SIGKILL
        if landed == RANDOM_KILLS:
            break
    produce_up_to(TOTAL)
    final = subprocess.run(archive_command(config), env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr

    store = ArchiveStore(root)
    with TopicLog(kafka_bootstrap, topic) as log:
        records = log.read_until(lambda rs: len(rs) >= TOTAL, 60, "the whole topic")
    expected = [
        row for message in sorted(records, key=lambda r: (r.partition, r.offset)) for row in expected_rows(message)
    ]
    actual = [{k: v for k, v in row.items() if k != "book_time"} for row in archive_rows(store)]
    assert len(actual) == len(expected), outcomes
    assert actual == expected, outcomes
    assert not list(root.rglob("*.tmp"))
    assert landed == RANDOM_KILLS, outcomes
    assert len(NAMED_KILLS) + landed >= 20
    files = store.files()  # no input of a compaction is left
    assert files == store.live_files()
    last_hour = max(hour_of(int(row["book_time"].timestamp() * 1e6)) for row in archive_rows(store))
    for partition in range(PARTITIONS):
        closed = {file.hour_start_us for file in files if file.partition == partition} - {last_hour}
        assert len(closed) == 2
        for hour in closed:  # a closed hour: one file per partition (its records fit one)
            assert len([f for f in files if f.partition == partition and f.hour_start_us == hour]) == 1
