"""``optionstream demo``: its wiring, the checks it makes before starting anything, and that it owns its
children (orchestration/test_dagster_dev.py covers dagster dev itself)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from optionstream_pipeline import demo
from optionstream_pipeline.cli import build_parser
from optionstream_pipeline.config import Settings
from optionstream_pipeline.kafka.broker import free_port
from optionstream_pipeline.lifeline import alive
from optionstream_pipeline_tests.support.waiting import wait_until


def test_demo_is_a_subcommand() -> None:
    args = build_parser().parse_args(["demo", "--port", "3999", "--instruments", "50"])
    assert args.func is demo.run_demo
    assert (args.port, args.instruments, args.data_dir) == (3999, 50, "data")


def test_demo_environment_points_dagster_at_the_broker_and_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIONSTREAM_KAFKA__BROKERS", "[elsewhere:9092]")
    monkeypatch.setenv("OPTIONSTREAM_DISCOVERY__SCHEDULE_CRON", "*/2 * * * *")
    env = demo.demo_environment(Settings(), None, tmp_path, "127.0.0.1:1234", "ws://127.0.0.1:5/ws/api/v2")
    assert env["OPTIONSTREAM_DEPLOYMENT"] == "demo"
    assert env["OPTIONSTREAM_KAFKA__BROKERS"] == "[127.0.0.1:1234]"
    assert env["OPTIONSTREAM_DERIBIT__WEBSOCKET_URL"] == "ws://127.0.0.1:5/ws/api/v2"
    assert env["OPTIONSTREAM_DISCOVERY__UNIVERSE_PATH"] == str(tmp_path / "universe")
    assert env["OPTIONSTREAM_ARCHIVE__PATH"] == str(tmp_path / "archive")
    assert env["OPTIONSTREAM_DISCOVERY__SCHEDULE_CRON"] == "*/2 * * * *"  # the user's own tweak survives
    home = Path(env["DAGSTER_HOME"])
    assert home == tmp_path / "dagster_home"
    assert "tag_concurrency_limits" in (home / "dagster.yaml").read_text()


def test_dagster_command_uses_the_workspace() -> None:
    command = demo.dagster_command("127.0.0.1", 3001)
    assert command[1:4] == ["-m", "dagster", "dev"]
    assert str(demo.WORKSPACE) in command and "3001" in command


# -- the demo owns its children, and refuses to start where it would collide ----------------------

DEMO = [sys.executable, "-m", "optionstream_pipeline.cli", "demo"]


def demo_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("OPTIONSTREAM_")}


def refused(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*DEMO, *args], capture_output=True, text=True, timeout=timeout, env=demo_env())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Kafka:" not in result.stdout and "Dagster UI" not in result.stdout  # nothing was started
    return result


def test_a_taken_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = refused(["--port", str(port), "--data-dir", str(tmp_path)])
    assert f"port {port} on 127.0.0.1 is taken" in result.stderr
    assert "--port" in result.stderr


def test_a_data_directory_in_use_by_another_demo_is_refused(tmp_path: Path) -> None:
    lock = demo.hold_data_dir(tmp_path)  # as a running demo holds it
    try:
        result = refused(["--port", str(free_port()), "--data-dir", str(tmp_path)])
    finally:
        lock.close()
    assert f"another demo (pid {os.getpid()}) is using the data directory {tmp_path}" in result.stderr


def test_an_instance_with_a_live_daemon_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    (home / "history").mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(home / "history" / "runs.db")) as db:
        db.execute("CREATE TABLE daemon_heartbeats (daemon_type TEXT, daemon_id TEXT, timestamp TIMESTAMP, body TEXT)")
        db.execute("INSERT INTO daemon_heartbeats VALUES ('SENSOR', 'x', '2026-12-01 12:00:00.000000', '')")
        db.commit()
    beat = datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp()
    demo.check_no_live_daemon(home, now=beat + demo.DAEMON_ALIVE_S + 1)  # long gone: fine
    with pytest.raises(demo.DemoRefused, match=r"a Dagster daemon \(SENSOR\) holds the instance .* 20 s ago"):
        demo.check_no_live_daemon(home, now=beat + 20)
    demo.check_no_live_daemon(tmp_path / "no-instance-yet")


GUARDED_PARENT = """
import subprocess, sys, time
from optionstream_pipeline.lifeline import Lifeline
lifeline = Lifeline(grace_s=2)
child = subprocess.Popen(["bash", "-c", "sleep 600 & sleep 600"], start_new_session=True)
lifeline.watch(child.pid)
print(child.pid, lifeline.guard_pid, flush=True)
time.sleep(600)
"""


def test_the_lifeline_stops_a_watched_process_group_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", GUARDED_PARENT], stdout=subprocess.PIPE, text=True)
    group, guard = (int(pid) for pid in parent.stdout.readline().split())
    try:
        wait_until(lambda: len(group_members(group)) >= 3, 10, message="bash and both sleeps of the group running")
        parent.kill()  # no chance to clean up
        parent.wait(10)
        wait_until(lambda: not alive(group), 15, message="the watched group stopped by the guard")
        wait_until(lambda: not pid_alive(guard), 10, message="the guard exited")
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_demo_leaves_no_child_behind(tmp_path: Path) -> None:
    """SIGKILL the demo while its capture run is live (and its live view shows the books): broker,
    dagster dev, daemon, code server, webserver and run worker all stop within seconds."""
    port, view_port = free_port(), free_port()
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [*DEMO, "--port", str(port), "--view-port", str(view_port), "--data-dir", str(tmp_path / "data"),
             "--embedded-kafka", "--instruments", "20", "--lifecycle-interval", "0"],
            stdout=log_file, stderr=subprocess.STDOUT, env=demo_env(), start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(
            lambda: process.poll() is None and started_capture_runs(port),
            150,
            interval=1,
            message=f"a STARTED capture run under the demo\n{log_path.read_text()[-3000:]}",
        )
        assert f"Live view of the books: http://127.0.0.1:{view_port}/" in log_path.read_text()
        wait_until(lambda: live_view_books(view_port) > 0, 60, interval=0.5, message="books in the live view")
        children = descendants(process.pid)
        commands = " ".join(command for command in children.values())
        assert "tansu" in commands and "dagster" in commands, commands
        process.kill()
        process.wait(10)
        wait_until(
            lambda: not [pid for pid in children if pid_alive(pid)],
            30,
            interval=0.5,
            message="every process the demo started gone",
        )
    finally:
        if process.poll() is None:
            process.kill()


def live_view_books(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return json.loads(response.read())["books"]
    except OSError:
        return 0


STARTED_CAPTURE_RUNS = """{ runsOrError(filter: {pipelineName: "deribit_capture", statuses: [STARTED]}) {
  ... on Runs { results { runId } } } }"""


def started_capture_runs(port: int) -> list[str]:
    try:
        data = demo._graphql(f"http://127.0.0.1:{port}/graphql", STARTED_CAPTURE_RUNS, {})
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [run["runId"] for run in data["runsOrError"]["results"]]


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` now, with its command line (from /proc)."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, str] = {}
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found[child] = commands.get(child, "")
            pending.append(child)
    return found


def group_members(group: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == group:
                members.append(int(entry.name))
    return members


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
