"""The real recording through capture; `optionstream capture` as a user runs it; metrics; secrets."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from optionstream_pipeline.kafka.broker import free_port
from optionstream_pipeline_tests.capture.conftest import by_instrument, capture_settings, running_capture
from optionstream_pipeline_tests.support.fixtures import RECORDING, recorded_book_messages
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until

API_KEY, API_SECRET = "replay-client", "s3cret-never-logged"


def test_the_real_recording_replays_into_kafka_without_a_spurious_gap(
    simulator, kafka_bootstrap, kafka_topic, monkeypatch, caplog
) -> None:
    recorded = [m for m in recorded_book_messages() if m["instrument_name"].startswith("BTC-")]
    instruments = sorted({m["instrument_name"] for m in recorded})
    caplog.set_level(logging.DEBUG)  # the secret must not appear at any level
    monkeypatch.setenv("DERIBIT_CLIENT_ID", API_KEY)
    monkeypatch.setenv("DERIBIT_CLIENT_SECRET", API_SECRET)
    sim = simulator(replay_path=str(RECORDING), replay_speed=None, client_id=API_KEY, client_secret=API_SECRET)
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic)
    with running_capture(settings, instruments) as capture, TopicLog(kafka_bootstrap, kafka_topic) as reader:
        assert capture.engine.interval == "raw"  # credentials in the environment select raw books
        records = reader.read_until(
            lambda rs: sum(1 for r in rs if r.record.type in ("snapshot", "change")) >= len(recorded),
            30,
            "every recorded BTC book message",
        )
        stats = capture.engine.stats()
    assert stats.gaps == 0 and stats.resyncs == 0
    streams = by_instrument(records)
    for name in instruments:
        expected = [(m["change_id"], m.get("prev_change_id")) for m in recorded if m["instrument_name"] == name]
        got = [(r.change_id, r.prev_change_id) for r in streams[name] if r.type in ("snapshot", "change")]
        assert got == expected, name
    assert all(API_SECRET not in message for message in caplog.messages)
    assert all(API_SECRET.encode() not in r.value for r in records)


def test_metrics_endpoint_serves_capture_counters(simulator, kafka_bootstrap, kafka_topic) -> None:
    sim = simulator(max_instruments=6)
    instruments = sim.market.instruments()[:3]
    with running_capture(capture_settings(sim.url, kafka_bootstrap, kafka_topic), instruments) as capture:
        wait_until(lambda: capture.engine.stats().delivered > 10, 20, message="records delivered")
        url = f"http://127.0.0.1:{capture.engine.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    assert "optionstream_capture_messages_in_total" in body
    assert "optionstream_capture_gaps_total 0.0" in body
    for name in instruments:
        assert f'optionstream_capture_update_age_seconds{{instrument="{name}"}}' in body


def test_capture_command_stops_on_sigterm_with_everything_flushed(
    simulator, kafka_bootstrap, kafka_topic, tmp_path: Path
) -> None:
    sim = simulator(max_instruments=8)
    instruments = sim.market.instruments()[:5]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "deribit": {"websocket_url": sim.url, "instruments": instruments},
                "kafka": {"brokers": [kafka_bootstrap], "topic": kafka_topic, "batch_timeout_ms": 5},
                "capture": {"metrics": {"port": 0}},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIONSTREAM_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "optionstream_pipeline.cli", "capture", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with TopicLog(kafka_bootstrap, kafka_topic) as reader:
            reader.read_until(lambda rs: len({r.key for r in rs}) == len(instruments), 30, "data from every book")
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
            assert process.returncode == 0, output
            records = reader.read_until(
                lambda rs: (
                    sum(1 for r in rs if getattr(r.record, "reason", None) == "capture stopped") == len(instruments)
                ),
                15,
                "a 'capture stopped' marker per instrument: the last records were flushed",
            )
    finally:
        if process.poll() is None:
            process.kill()
    assert "every record delivered" in output
    assert {r.key for r in records} == set(instruments)


def test_an_unreachable_broker_is_named_at_start(simulator, tmp_path: Path) -> None:
    sim = simulator(max_instruments=4)
    closed_port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "deribit": {"websocket_url": sim.url, "instruments": sim.market.instruments()[:2]},
                "kafka": {"brokers": [f"127.0.0.1:{closed_port}"], "admin_timeout_s": 3},
                "capture": {"metrics": {"port": 0}},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIONSTREAM_")}
    result = subprocess.run(
        [sys.executable, "-m", "optionstream_pipeline.cli", "capture", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    # librdkafka retries the connection every few tens of milliseconds: each problem is said once.
    assert len(lines) <= 6, "\n".join(lines)
    assert f"Kafka brokers 127.0.0.1:{closed_port} unreachable within 3 s" in lines[-1]  # the last line: the cause
    assert not any(line.startswith("%") for line in lines), "librdkafka wrote to stderr past Python logging"
    assert not any("every record delivered" in line for line in lines)
