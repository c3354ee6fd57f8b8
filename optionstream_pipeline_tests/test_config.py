"""The configuration file: its shape, environment overrides, and a named error for each bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from optionstream_pipeline.config import ConfigError, Settings, load_settings, settings_from_mapping

REPO_ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=environ or {})
    return str(caught.value)


def test_shipped_config_loads_with_the_original_shape() -> None:
    settings = load_settings(REPO_ROOT / "config" / "config.yaml", environ={})
    assert settings.deribit.websocket_url == "wss://test.deribit.com/ws/api/v2"
    assert settings.deribit.testnet is True
    assert settings.kafka.topic == "orderbook.deribit.options"
    assert settings.kafka.batch_size == 100
    assert settings.kafka.required_acks == -1
    assert settings.kafka.compression_type == "snappy"
    assert all(name.startswith("BTC-") for name in settings.deribit.instruments)


def test_missing_keys_take_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "kafka:\n  topic: t1\n"), environ={})
    assert settings.kafka.topic == "t1"
    assert settings.kafka.brokers == ["127.0.0.1:9092"]
    assert settings.deribit.heartbeat_interval_s == 30


def test_environment_overrides_every_level(tmp_path: Path) -> None:
    environ = {
        "OPTIONSTREAM_KAFKA__BATCH_SIZE": "500",
        "OPTIONSTREAM_KAFKA__BROKERS": "[k1:9092, k2:9092]",
        "OPTIONSTREAM_DERIBIT__RECONNECT__MULTIPLIER": "3",
        "OPTIONSTREAM_KAFKA__LIBRDKAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "UNRELATED": "x",
    }
    settings = load_settings(write(tmp_path, "kafka:\n  batch_size: 10\n"), environ=environ)
    assert settings.kafka.batch_size == 500
    assert settings.kafka.brokers == ["k1:9092", "k2:9092"]
    assert settings.deribit.reconnect.multiplier == 3.0
    assert settings.kafka.librdkafka == {"security.protocol": "SASL_SSL"}


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  topic: from-env-path\n")
    assert load_settings(environ={"OPTIONSTREAM_CONFIG": str(path)}).kafka.topic == "from-env-path"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kafka:\n  batchsize: 5\n", "kafka.batchsize: unknown key; allowed keys here: brokers"),
        ("colour: red\n", "colour: unknown key"),
        ("kafka:\n  batch_size: many\n", "kafka.batch_size: expected an integer, got 'many' (str)"),
        (
            "kafka:\n  enable_idempotency: 1\n",
            "kafka.enable_idempotency: expected true or false, got 1 (int)",
        ),
        ("kafka:\n  batch_size: 0\n", "kafka.batch_size: 0 (int) is out of range; allowed: 1 to 1000000"),
        (
            "kafka:\n  required_acks: -2\n",
            "kafka.required_acks: -2 (int) is out of range; allowed: -1 to 1000",
        ),
        (
            "kafka:\n  compression_type: brotli\n",
            "kafka.compression_type: 'brotli' (str) is not allowed; allowed: 'none', 'gzip', 'snappy', 'lz4', 'zstd'",
        ),
        (
            "deribit:\n  instruments: [BTC-26JUN26-100000-C, BTC-32JUN26-1-C]\n",
            "deribit.instruments[1]: 'BTC-32JUN26-1-C' has an impossible expiry date",
        ),
        (
            "deribit:\n  instruments: [BTC-26JUN26-100000-X]\n",
            "deribit.instruments[0]: 'BTC-26JUN26-100000-X' is not a Deribit option name",
        ),
        (
            "deribit:\n  instruments: [ETH-26JUN26-4000-C]\n",
            "deribit.instruments[0]: 'ETH-26JUN26-4000-C' is a ETH option; allowed: BTC options only",
        ),
        ("deribit:\n  instruments: []\n", "deribit.instruments: must not be empty"),
        ("kafka:\n  brokers: []\n", "kafka.brokers: must not be empty"),
        (
            "kafka:\n  brokers: [localhost]\n",
            "kafka.brokers[0]: 'localhost' is not allowed; allowed: HOST:PORT",
        ),
        (
            "deribit:\n  book_interval: 1s\n",
            "deribit.book_interval: '1s' (str) is not allowed; allowed: 'auto', '100ms', 'agg2', 'raw'",
        ),
        (
            "deribit:\n  heartbeat_interval_s: 5\n",
            "deribit.heartbeat_interval_s: 5 (int) is out of range; allowed: 10 to 3600",
        ),
        ("deribit:\n  websocket_url: http://x\n", "deribit.websocket_url: 'http://x' is not allowed"),
        ("kafka: [1, 2]\n", "kafka: expected a mapping of keys, got [1, 2] (list)"),
        ("- just\n- a list\n", "must hold a mapping of sections"),
        ("kafka:\n  topic: [unclosed\n", "is not valid YAML"),
        (
            "kafka:\n  librdkafka:\n    sasl.password: hunter2\n",
            "kafka.librdkafka.sasl.password: secrets are not accepted in configuration",
        ),
        (
            "kafka:\n  librdkafka:\n    linger.ms: 5\n",
            "kafka.librdkafka.linger.ms: set through the typed kafka settings",
        ),
        (
            "kafka:\n  librdkafka:\n    partitioner: random\n",
            "kafka.librdkafka.partitioner: set through the typed kafka settings",
        ),
        (
            "kafka:\n  librdkafka:\n    ssl.key.pem: '-----BEGIN'\n",
            "kafka.librdkafka.ssl.key.pem: secrets are not accepted in configuration",
        ),
        (
            "deribit:\n  reconnect:\n    initial_backoff_ms: 5000\n    max_backoff_ms: 1000\n",
            "deribit.reconnect.max_backoff_ms: 1000 is below initial_backoff_ms (5000)",
        ),
        (
            "archive:\n  path: gs://bucket/archive\n",
            "archive.path: 'gs://bucket/archive' is not a supported location; allowed: a local directory or "
            "s3://bucket/prefix",
        ),
        ("archive:\n  path: s3:///archive\n", "archive.path: 's3:///archive' names no bucket"),
        ("archive:\n  lease_s: 0.5\n", "archive.lease_s: 0.5 (float) is out of range; allowed: 1 to 3600"),
    ],
)
def test_each_bad_value_fails_with_a_message_naming_key_value_and_allowed(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in problems_of(tmp_path, text)


def test_the_archive_may_be_a_directory_or_an_s3_prefix() -> None:
    assert settings_from_mapping({"archive": {"path": "s3://bucket/btc/"}}).archive.path == "s3://bucket/btc"
    assert settings_from_mapping({"archive": {"path": "/data/archive"}}).archive.path == "/data/archive"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "kafka:\n  batch_size: 0\n  topik: x\nderibit:\n  testnet: maybe\n")
    assert "kafka.batch_size" in message
    assert "kafka.topik" in message
    assert "deribit.testnet" in message


def test_bad_environment_override_is_named(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "{}\n", environ={"OPTIONSTREAM_KAFKA__PARTITIONS": "lots"})
    assert "kafka.partitions: expected an integer, got 'lots'" in message


def test_a_bad_value_from_the_environment_names_its_variable(tmp_path: Path) -> None:
    environ = {"OPTIONSTREAM_KAFKA__PARTITIONS": "lots", "OPTIONSTREAM_KAFKA__LIBRDKAFKA__SASL_PASSWORD": "x"}
    message = problems_of(tmp_path, "kafka:\n  batch_size: 0\n", environ=environ)
    assert "kafka.partitions: expected an integer, got 'lots' (str) (from the environment variable " in message
    assert "OPTIONSTREAM_KAFKA__PARTITIONS)" in message
    batch_size = next(line for line in message.splitlines() if "kafka.batch_size" in line)
    assert "environment variable" not in batch_size  # that one is the file's


def test_an_environment_variable_naming_no_section_is_refused(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "{}\n", environ={"OPTIONSTREAM_KAFAK__TOPIC": "t"})
    assert "environment variable OPTIONSTREAM_KAFAK__TOPIC: 'kafak' is not a section; allowed: deribit" in message


def test_environment_values_are_yaml_null_included(tmp_path: Path) -> None:
    environ = {
        "OPTIONSTREAM_ORCHESTRATION__RECYCLE_AFTER_S": "null",
        "OPTIONSTREAM_CAPTURE__METRICS__ENABLED": "false",
        "OPTIONSTREAM_KAFKA__TOPIC": "123",
        "OPTIONSTREAM_KAFKA__SECRET_ENVS__SSL_KEY_PASSWORD": "MY_KEY_PASSWORD",
    }
    settings = load_settings(write(tmp_path, "{}\n"), environ=environ)
    assert settings.orchestration.recycle_after_s is None
    assert settings.capture.metrics.enabled is False
    assert settings.kafka.topic == "123"  # a string field keeps the text
    assert settings.kafka.secret_envs == {"ssl.key.password": "MY_KEY_PASSWORD"}


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the configuration file .*missing\.yaml"):
        load_settings(tmp_path / "missing.yaml", environ={})


def test_secrets_come_from_the_environment_and_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_mapping({"deribit": {"client_id_env": "MY_ID", "client_secret_env": "MY_SECRET"}})
    monkeypatch.delenv("MY_ID", raising=False)
    assert settings.deribit_credentials() is None
    monkeypatch.setenv("MY_ID", "abc")
    monkeypatch.setenv("MY_SECRET", "s3cr3t-value")
    client_id, secret = settings.deribit_credentials()
    assert client_id == "abc"
    assert secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(secret) + str(secret) + repr(settings)


def test_replace_revalidates() -> None:
    settings = Settings().replace(**{"kafka.topic": "other", "kafka.brokers": ["h:1"]})
    assert settings.kafka.topic == "other"
    with pytest.raises(ConfigError, match=r"kafka\.batch_size"):
        settings.replace(**{"kafka.batch_size": -5})


def test_secret_equality_does_not_reveal() -> None:
    assert SecretStr("a") == SecretStr("a")
    assert SecretStr("a") != SecretStr("b")


# --- discovery and orchestration (the Dagster layer's sections) ------------------------------------


def test_shipped_config_has_discovery_and_orchestration_sections() -> None:
    settings = load_settings(REPO_ROOT / "config" / "config.yaml", environ={})
    assert settings.discovery.schedule_cron == "*/10 * * * *"
    assert settings.discovery.filters.strike_band == 0.5
    assert settings.discovery.filters.include is None
    assert settings.orchestration.observation_interval_s == 5
    assert settings.orchestration.checks.min_coverage == 1.0


def test_auto_instruments_and_null_options(tmp_path: Path) -> None:
    text = (
        "deribit:\n  instruments: auto\n"
        "discovery:\n  filters:\n    strike_band: null\n"
        "orchestration:\n  recycle_after_s: null\n"
    )
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.deribit.instruments == "auto"
    assert settings.discovery.filters.strike_band is None
    assert settings.orchestration.recycle_after_s is None
    assert settings.replace(**{"kafka.topic": "t"}).discovery == settings.discovery  # round-trips


def test_discovery_filters_from_the_environment(tmp_path: Path) -> None:
    environ = {
        "OPTIONSTREAM_DISCOVERY__FILTERS__INCLUDE": "[BTC-26JUN26-100000-C]",
        "OPTIONSTREAM_DISCOVERY__FILTERS__MAX_INSTRUMENTS": "300",
    }
    settings = load_settings(write(tmp_path, "{}\n"), environ=environ)
    assert settings.discovery.filters.include == ["BTC-26JUN26-100000-C"]
    assert settings.discovery.filters.max_instruments == 300


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "discovery:\n  schedule_cron: every ten minutes\n",
            "discovery.schedule_cron: 'every ten minutes' is not allowed; allowed: a 5-field cron string",
        ),
        (
            "discovery:\n  filters:\n    min_days_to_expiry: 30\n    max_days_to_expiry: 7\n",
            "discovery.filters.max_days_to_expiry: 7.0 is below min_days_to_expiry (30.0)",
        ),
        (
            "discovery:\n  filters:\n    strike_band: 0\n",
            "discovery.filters.strike_band: 0.0 (float) is out of range; allowed: 0.01 to 100",
        ),
        (
            "discovery:\n  filters:\n    include: [BTC-PERPETUAL]\n",
            "discovery.filters.include[0]: 'BTC-PERPETUAL' is not a Deribit option name",
        ),
        (
            "discovery:\n  filters:\n    include: [BTC-26JUN26-1000-C]\n    exclude: [BTC-26JUN26-1000-C]\n",
            "discovery.filters: both included and excluded: BTC-26JUN26-1000-C",
        ),
        (
            "deribit:\n  max_connections: 2\n  channels_per_connection: 100\ndiscovery:\n  filters:\n"
            "    max_instruments: 500\n",
            "discovery.filters.max_instruments: 500 is more than the capture can follow (200",
        ),
        (
            "orchestration:\n  observation_interval_s: 30\n  heartbeat_stale_s: 60\n",
            "orchestration.heartbeat_stale_s: 60.0 is below 3 observation intervals (90)",
        ),
        (
            "orchestration:\n  heartbeat_stale_s: 30\n  engine_start_timeout_s: 60\n",
            "orchestration.heartbeat_stale_s: 30.0 is below engine_start_timeout_s (60.0)",
        ),
        (
            "orchestration:\n  failure_backoff_s: 600\n  max_backoff_s: 60\n",
            "orchestration.max_backoff_s: 60.0 is below failure_backoff_s (600.0)",
        ),
        (
            "orchestration:\n  checks:\n    max_gap_rate: 2\n",
            "orchestration.checks.max_gap_rate: 2.0 (float) is out of range; allowed: 0 to 1",
        ),
        (
            "orchestration:\n  recycle_after_s: 1\n",
            "orchestration.recycle_after_s: 1.0 (float) is out of range; allowed: 10 to 2592000",
        ),
    ],
)
def test_each_bad_orchestration_value_is_named(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problems_of(tmp_path, text)


def test_optionstream_config_prints_settings_to_stdout_and_errors_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from optionstream_pipeline.cli import main

    monkeypatch.delenv("OPTIONSTREAM_CONFIG", raising=False)
    assert main(["config", "--config", str(write(tmp_path, "kafka:\n  topic: shown\n"))]) == 0
    out, err = capsys.readouterr()
    assert "topic: shown" in out and not err
    monkeypatch.setenv("OPTIONSTREAM_KAFKA__BATCH_SIZE", "0")
    assert main(["config", "--config", str(write(tmp_path, "kafka:\n  topik: x\n"))]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "kafka.topik: unknown key" in err
    assert "kafka.batch_size: 0 (int) is out of range; allowed: 1 to 1000000 (from the environment variable" in err
