"""``optionstream demo`` wiring (the full demo runs dagster dev; test_dagster_dev.py covers that path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from optionstream_pipeline import demo
from optionstream_pipeline.cli import build_parser
from optionstream_pipeline.config import Settings


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
    assert env["OPTIONSTREAM_DISCOVERY__SCHEDULE_CRON"] == "*/2 * * * *"  # the user's own tweak survives
    home = Path(env["DAGSTER_HOME"])
    assert home == tmp_path / "dagster_home"
    assert "tag_concurrency_limits" in (home / "dagster.yaml").read_text()


def test_dagster_command_uses_the_workspace() -> None:
    command = demo.dagster_command("127.0.0.1", 3001)
    assert command[1:4] == ["-m", "dagster", "dev"]
    assert str(demo.WORKSPACE) in command and "3001" in command
