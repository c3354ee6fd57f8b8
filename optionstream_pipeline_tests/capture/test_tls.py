"""TLS to Deribit is verified, with a throwaway CA: refused without it (saying why), captured with it.

The simulator serves ``wss://`` with a certificate a ``trustme`` CA issued for 127.0.0.1 and
localhost. No system trust store knows that CA, so a capture using the system store must refuse the
server, with an error naming the certificate problem and the URL, and write nothing to Kafka; the
same capture with ``deribit.tls_ca_file`` set to the CA captures books equal to the exchange's truth.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
import yaml

from optionstream_pipeline.capture.transport import CertificateRefused, open_transport
from optionstream_pipeline.cli import build_parser
from optionstream_pipeline.config import ConfigError
from optionstream_pipeline.deribit.public_api import fetch_option_names
from optionstream_pipeline.deribit.tls import CertificateVerificationError
from optionstream_pipeline.kafka.reader import TopicReader
from optionstream_pipeline.simulator.cli import server_ssl_context
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.capture.conftest import (
    capture_settings,
    check_books_against_truth,
    check_record_envelope,
    running_capture,
    settle_and_read,
    wait_subscribed,
)
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TRANSPORTS = ["websockets", "picows"]
UNTRUSTED = "certificate verify failed: unable to get local issuer certificate"
CONNECTION_LOG = "optionstream_pipeline.capture.connection"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The throwaway CA's certificate, PEM: what ``deribit.tls_ca_file`` names."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def tls_simulator(ca: trustme.CA, tmp_path: Path) -> Iterator[Callable[..., SimulatorThread]]:
    """Start simulators serving ``wss://`` with a certificate for ``names`` (127.0.0.1 and localhost by
    default), loaded the way ``optionstream simulate --tls-cert FILE --tls-key FILE`` loads it."""
    started: list[SimulatorThread] = []

    def start(names: tuple[str, ...] = ("127.0.0.1", "localhost"), **settings: object) -> SimulatorThread:
        cert, key = tmp_path / f"cert-{len(started)}.pem", tmp_path / f"key-{len(started)}.pem"
        issued = ca.issue_cert(*names)
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        args = build_parser().parse_args(["simulate", "--tls-cert", str(cert), "--tls-key", str(key)])
        sim = SimulatorThread(SimulatorSettings(**settings), server_ssl_context(args)).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def read_whole_topic(bootstrap: str, topic: str) -> list:
    with TopicReader(bootstrap, topic) as reader:
        return list(reader.read_to_end(15))


# -- capture ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_capture_without_the_ca_refuses_the_server_and_says_why(
    tls_simulator, kafka_bootstrap, kafka_topic, transport, caplog
) -> None:
    sim = tls_simulator(max_instruments=10)
    assert sim.url.startswith("wss://127.0.0.1:")
    instruments = sim.market.instruments()[:4]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic, **{"deribit.transport": transport})
    with caplog.at_level(logging.WARNING, logger=CONNECTION_LOG), running_capture(settings, instruments) as capture:
        wait_until(lambda: capture.engine.stats().tls_refused >= 3, 20, message="3 attempts refused (and retried)")
        stats = capture.engine.stats()
        assert sim.sessions() == []  # not one WebSocket session reached the exchange
        final = capture.stop()

    expected = f"TLS certificate verification failed for {sim.url}: {UNTRUSTED}"
    assert stats.last_error.startswith(expected), stats.last_error
    assert "set deribit.tls_ca_file to a CA bundle that signs the server's certificate" in stats.last_error
    errors = [r.getMessage() for r in caplog.records if r.name == CONNECTION_LOG and r.levelno == logging.ERROR]
    assert len(errors) >= 3 and all(expected in message for message in errors), errors
    assert (final.connects, final.messages_in, final.messages_out, final.markers) == (0, 0, 0, 0)
    assert read_whole_topic(kafka_bootstrap, kafka_topic) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_capture_with_the_ca_file_captures_books_equal_to_the_truth(
    tls_simulator, ca_file, kafka_bootstrap, kafka_topic, transport
) -> None:
    sim = tls_simulator(max_instruments=20, events_per_second=300)
    instruments = sim.market.instruments()[:8]
    settings = capture_settings(
        sim.url, kafka_bootstrap, kafka_topic, **{"deribit.transport": transport, "deribit.tls_ca_file": ca_file}
    )
    with running_capture(settings, instruments) as capture, TopicLog(kafka_bootstrap, kafka_topic) as reader:
        wait_subscribed(capture, len(instruments))
        wait_until(lambda: capture.engine.stats().messages_in >= 200, 20, message="200 book messages in")
        records = settle_and_read(sim, reader, instruments)
        final = capture.stop()

    check_record_envelope(records)
    assert check_books_against_truth(records, sim) >= 150
    assert {record.key for record in records} == set(instruments)
    assert final.tls_refused == 0 and final.reconnects == 0 and final.delivery_failed == 0


def test_optionstream_capture_prints_the_certificate_problem(tls_simulator, kafka_bootstrap, kafka_topic, tmp_path):
    """What a person running ``optionstream capture`` sees on stderr; SIGINT still stops it cleanly."""
    sim = tls_simulator(max_instruments=6)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "deribit": {"reconnect": {"initial_backoff_ms": 50, "max_backoff_ms": 200}},
                "kafka": {"topic": kafka_topic, "partitions": 4},
                "capture": {"metrics": {"port": 0}},
            }
        )
    )
    command = [sys.executable, "-m", "optionstream_pipeline.cli", "capture", "--config", str(config), "--no-status"]
    command += ["--url", sim.url, "--brokers", kafka_bootstrap, "--instruments", sim.market.instruments()[0]]
    environ = {key: value for key, value in os.environ.items() if not key.startswith("OPTIONSTREAM_")}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environ, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        expected = f"TLS certificate verification failed for {sim.url}: {UNTRUSTED}"
        wait_until(lambda: any(" ERROR " in line and expected in line for line in lines), 30, message=expected)
    finally:
        process.send_signal(signal.SIGINT)
        returncode = process.wait(30)
        reader.join(5)
    assert returncode == 0, "".join(lines)


# -- the one-shot public calls (discovery, the live chain) and each transport, directly ----------


def test_the_public_api_verifies_like_capture(tls_simulator, ca_file) -> None:
    sim = tls_simulator(max_instruments=10)
    with pytest.raises(CertificateVerificationError, match=f"failed for {sim.url}: {UNTRUSTED}"):
        asyncio.run(fetch_option_names(sim.url, timeout_s=5))
    assert asyncio.run(fetch_option_names(sim.url, timeout_s=5, ca_file=ca_file)) == sorted(sim.market.instruments())


async def _open_and_close(transport: str, url: str, ca_file: str | None) -> None:
    async def no_wait() -> None:
        return None

    opened = await open_transport(transport, url, lambda frame: True, no_wait, 5, ca_file)
    await opened.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_certificate_for_another_name_is_refused_even_with_its_ca(tls_simulator, ca_file, transport) -> None:
    sim = tls_simulator(names=("deribit.example",))
    with pytest.raises(CertificateRefused) as refused:
        asyncio.run(_open_and_close(transport, sim.url, ca_file))
    message = str(refused.value)
    assert message.startswith(f"TLS certificate verification failed for {sim.url}: certificate verify failed: ")
    assert "mismatch" in message and "127.0.0.1" in message, message
    assert "the URL's host must be a name the server's certificate is issued for" in message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_transport_connects_with_the_ca_and_names_the_host(tls_simulator, ca_file, transport) -> None:
    sim = tls_simulator()
    localhost = sim.url.replace("127.0.0.1", "localhost")
    asyncio.run(_open_and_close(transport, localhost, ca_file))
    with pytest.raises(CertificateRefused, match=UNTRUSTED):
        asyncio.run(_open_and_close(transport, localhost, None))


# -- the setting --------------------------------------------------------------------------------


def test_a_ca_file_that_does_not_exist_fails_validation_naming_the_key(tmp_path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError) as caught:
        capture_settings("wss://127.0.0.1:1/ws/api/v2", "127.0.0.1:9092", "t", **{"deribit.tls_ca_file": str(missing)})
    assert caught.value.problems == [
        f"deribit.tls_ca_file: {str(missing)!r} does not exist or is not a file; "
        "allowed: a PEM file of CA certificates, or null for the system trust store"
    ]


def test_a_ca_file_without_certificates_fails_validation(tmp_path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as caught:
        capture_settings("wss://127.0.0.1:1/ws/api/v2", "127.0.0.1:9092", "t", **{"deribit.tls_ca_file": str(garbage)})
    [problem] = caught.value.problems
    assert problem.startswith(f"deribit.tls_ca_file: {str(garbage)!r} cannot be loaded as CA certificates ("), problem


def test_the_simulator_refuses_a_key_without_a_certificate() -> None:
    args = build_parser().parse_args(["simulate", "--tls-key", "key.pem"])
    with pytest.raises(SystemExit, match="--tls-key needs --tls-cert"):
        server_ssl_context(args)
