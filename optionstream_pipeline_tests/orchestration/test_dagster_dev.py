"""The real thing: ``dagster dev -w workspace.yaml`` keeps one capture run alive, seen through GraphQL only.

One scenario, in order (each step waits on a condition with a deadline):

1. start ``dagster dev`` (own session, own DAGSTER_HOME, free port) against the session's Kafka broker
   and a simulator; the supervisor sensor and both schedules are RUNNING;
2. the sensor launches discovery and a capture run; the run is STARTED, its observations show growing
   message counts, and records arrive in Kafka;
3. the run is terminated from the API: it ends CANCELED and the sensor starts a new one;
4. the whole ``dagster dev`` process tree is SIGKILLed and restarted: the orphaned STARTED run is
   marked failed (stale heartbeat) and a new one is STARTED;
5. the archive schedule (every minute here) has archived every partition of the topic, rows included;
6. the Deribit API secret (a canary, which capture authenticated with) is nowhere the stack wrote:
   ``dagster dev``'s log, Dagster's storage (event log, run and compute logs), the archive's Parquet,
   the universe files, the Kafka records.

Measured durations are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optionstream_pipeline.demo import cancel_capture_runs, stop_process_group
from optionstream_pipeline.kafka.broker import free_port
from optionstream_pipeline.kafka.reader import TopicReader
from optionstream_pipeline.lifeline import alive
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.support.canary import places_holding
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(280)]

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPTURE_JOB = "deribit_capture"
TOPIC_PATH = ["kafka", "deribit_option_books"]

REPOSITORY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  sensors { name sensorState { status } } schedules { name scheduleState { status } } } } } }"""
RUNS = """query($statuses: [RunStatus!]) { runsOrError(filter: {pipelineName: "deribit_capture", statuses: $statuses}) {
  ... on Runs { results { runId status startTime endTime } } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { ... on Run { runId status } } }"""
OBSERVATIONS = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetObservations(limit: 20) { runId timestamp
    metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""
TERMINATE = """mutation($id: String!) { terminateRun(runId: $id) { __typename } }"""
MATERIALIZATIONS = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetMaterializations(limit: 200) { partition
    metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""
ARCHIVE_PATH = ["archive", "deribit_option_books"]
CLIENT_ID, CANARY_SECRET = "optionstream-test-client", "canary-7f3a9c1e-do-not-log"


class DagsterDev:
    """One ``dagster dev`` process tree in its own session, spoken to over HTTP only."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until the webserver answers; returns the startup time in seconds."""
        self.port = free_port()
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            command = ["dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dagster", *command],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._ready, 90, interval=0.25, message=f"dagster dev answering /server_info\n{self.log_tail()}")
        return time.monotonic() - began

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=15) as response:
            reply = json.loads(response.read())
        assert "errors" not in reply, reply["errors"]
        return reply["data"]

    def kill_tree(self) -> None:
        """SIGKILL the whole process group at once (webserver, daemon, code servers, run workers)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        wait_until(lambda: not alive(self.process.pid), 10, message="every process of the group gone")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            cancel_capture_runs(f"{self.url}/graphql", 20)
        stop_process_group(self.process, 20)

    def log_tail(self, size: int = 6000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-size:]


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    settings = SimulatorSettings(
        max_instruments=20, events_per_second=200, client_id=CLIENT_ID, client_secret=CANARY_SECRET
    )
    with SimulatorThread(settings) as sim:
        yield sim


@pytest.fixture
def dagster_env(tmp_path: Path, simulator: SimulatorThread, kafka_bootstrap: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "config" / "dagster.yaml", home / "dagster.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPTIONSTREAM_")}
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "DERIBIT_CLIENT_ID": CLIENT_ID,
            "DERIBIT_CLIENT_SECRET": CANARY_SECRET,
            "OPTIONSTREAM_CONFIG": str(REPO_ROOT / "config" / "config.yaml"),
            "OPTIONSTREAM_DEPLOYMENT": "production",
            "OPTIONSTREAM_DERIBIT__WEBSOCKET_URL": simulator.url,
            "OPTIONSTREAM_DERIBIT__INSTRUMENTS": "auto",
            "OPTIONSTREAM_DERIBIT__BOOK_INTERVAL": "100ms",
            "OPTIONSTREAM_KAFKA__BROKERS": f"[{kafka_bootstrap}]",
            "OPTIONSTREAM_KAFKA__TOPIC": f"test-dagster-dev-{uuid.uuid4().hex[:8]}",
            "OPTIONSTREAM_KAFKA__PARTITIONS": "4",
            "OPTIONSTREAM_KAFKA__FLUSH_TIMEOUT_S": "5",
            "OPTIONSTREAM_CAPTURE__METRICS__ENABLED": "false",
            "OPTIONSTREAM_DISCOVERY__UNIVERSE_PATH": str(tmp_path / "universe"),
            "OPTIONSTREAM_ORCHESTRATION__OBSERVATION_INTERVAL_S": "1",
            "OPTIONSTREAM_ORCHESTRATION__HEARTBEAT_STALE_S": "10",
            "OPTIONSTREAM_ORCHESTRATION__ENGINE_START_TIMEOUT_S": "10",
            "OPTIONSTREAM_ORCHESTRATION__SUPERVISOR_INTERVAL_S": "3",
            "OPTIONSTREAM_ORCHESTRATION__ARCHIVE_CRON": "* * * * *",
            "OPTIONSTREAM_ARCHIVE__PATH": str(tmp_path / "archive"),
        }
    )
    return env


@pytest.fixture
def dagster_dev(dagster_env: dict[str, str], tmp_path: Path) -> Iterator[DagsterDev]:
    dev = DagsterDev(dagster_env, tmp_path / "dagster-dev.log")
    try:
        yield dev
    finally:
        dev.stop()


def capture_runs(dev: DagsterDev, *statuses: str) -> list[dict[str, Any]]:
    return dev.graphql(RUNS, statuses=list(statuses) or None)["runsOrError"]["results"]


def started_run(dev: DagsterDev, other_than: set[str] = frozenset()) -> dict[str, Any] | None:
    return next((run for run in capture_runs(dev, "STARTED") if run["runId"] not in other_than), None)


def run_status(dev: DagsterDev, run_id: str) -> str:
    return dev.graphql(RUN, id=run_id)["runOrError"]["status"]


def messages_in_of(dev: DagsterDev, run_id: str) -> list[int]:
    """messages_in of the run's observations, oldest first."""
    observations = dev.graphql(OBSERVATIONS, path=TOPIC_PATH)["assetOrError"].get("assetObservations") or []
    counts = [
        entry["intValue"]
        for observation in reversed(observations)
        if observation["runId"] == run_id
        for entry in observation["metadataEntries"]
        if entry["label"] == "messages_in"
    ]
    return counts


def archived_partitions(dev: DagsterDev) -> set[str]:
    """Partition keys of the archive asset with a materialization that holds rows."""
    asset = dev.graphql(MATERIALIZATIONS, path=ARCHIVE_PATH)["assetOrError"]
    return {
        materialization["partition"]
        for materialization in asset.get("assetMaterializations") or []
        for entry in materialization["metadataEntries"]
        if entry["label"] == "dagster/row_count" and entry.get("intValue", 0) > 0
    }


def test_dagster_dev_keeps_one_capture_run_alive(
    dagster_dev: DagsterDev, kafka_bootstrap: str, simulator: SimulatorThread, tmp_path: Path
) -> None:
    timings: dict[str, float] = {}
    began = time.monotonic()
    timings["startup_s"] = dagster_dev.start()

    # The supervisor and both schedules run out of the box.
    repository = dagster_dev.graphql(REPOSITORY)["repositoriesOrError"]["nodes"][0]
    assert {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]} == {"capture_supervisor": "RUNNING"}
    assert {s["name"]: s["scheduleState"]["status"] for s in repository["schedules"]} == {
        "discover_instruments_schedule": "RUNNING",
        "capture_health_checks_schedule": "RUNNING",
        "archive_schedule": "RUNNING",
    }

    # First launch: a STARTED capture run, observations with growing counts, data in Kafka.
    first = wait_until(lambda: started_run(dagster_dev), 90, 0.5, f"a STARTED capture run\n{dagster_dev.log_tail()}")
    timings["first_launch_s"] = time.monotonic() - began
    wait_until(
        lambda: (counts := messages_in_of(dagster_dev, first["runId"])) and counts[-1] > max(0, counts[0]),
        60,
        0.5,
        "observations with growing messages_in",
    )
    with TopicLog(kafka_bootstrap, dagster_dev.env["OPTIONSTREAM_KAFKA__TOPIC"]) as reader:
        reader.read_until(lambda records: len(records) >= 20, 30, "captured books in Kafka")
    assert any(session.authed for session in simulator.sessions())  # capture used the secret

    # Terminate from the API: CANCELED, and the sensor starts a replacement.
    terminated_at = time.monotonic()
    assert dagster_dev.graphql(TERMINATE, id=first["runId"])["terminateRun"]["__typename"] == "TerminateRunSuccess"
    wait_until(lambda: run_status(dagster_dev, first["runId"]) == "CANCELED", 60, 0.5, "the run CANCELED")
    second = wait_until(lambda: started_run(dagster_dev, {first["runId"]}), 90, 0.5, "a replacement run STARTED")
    timings["relaunch_after_cancel_s"] = time.monotonic() - terminated_at
    assert len(capture_runs(dagster_dev, "QUEUED", "NOT_STARTED", "STARTING", "STARTED")) == 1

    # Kill the whole tree: the run stays STARTED in storage with nobody behind it.
    wait_until(lambda: len(messages_in_of(dagster_dev, second["runId"])) >= 2, 30, 0.5, "the new run observing")
    dagster_dev.kill_tree()
    killed_at = time.monotonic()
    timings["restart_startup_s"] = dagster_dev.start()
    third = wait_until(
        lambda: started_run(dagster_dev, {first["runId"], second["runId"]}),
        120,
        0.5,
        f"capture resumed after the restart\n{dagster_dev.log_tail()}",
    )
    timings["resume_after_kill_s"] = time.monotonic() - killed_at
    assert run_status(dagster_dev, second["runId"]) == "FAILURE"  # marked failed by the supervisor
    wait_until(lambda: len(messages_in_of(dagster_dev, third["runId"])) >= 2, 60, 0.5, "the resumed run observing")
    assert len(capture_runs(dagster_dev, "QUEUED", "NOT_STARTED", "STARTING", "STARTED")) == 1

    # The archive schedule (every minute here) archived every Kafka partition of the topic. (A run whose
    # worker the SIGKILL above took holds its key until marked failed: on a loaded machine, a few ticks.)
    wait_until(
        lambda: archived_partitions(dagster_dev) == {"0", "1", "2", "3"},
        300,
        1,
        f"archive materializations with rows for every partition\n{dagster_dev.log_tail()}",
    )
    timings["archive_all_partitions_s"] = time.monotonic() - began

    # The secret capture authenticated with is nowhere the stack wrote.
    with TopicReader(kafka_bootstrap, dagster_dev.env["OPTIONSTREAM_KAFKA__TOPIC"]) as reader:
        records = list(reader.read_to_end(60))
    written = [tmp_path / name for name in ("dagster-dev.log", "dagster_home", "archive", "universe")]
    assert all(path.exists() for path in written)
    assert places_holding(CANARY_SECRET, written, records) == []
    print("\ndagster dev timings: " + ", ".join(f"{key} {value:.1f}" for key, value in timings.items()))
