"""The documented mapping from the configuration to librdkafka properties, and secret handling."""

from __future__ import annotations

from optionstream_pipeline.config import settings_from_mapping
from optionstream_pipeline.kafka.producer import producer_config, redacted


def test_typed_settings_map_to_librdkafka_properties() -> None:
    kafka = settings_from_mapping(
        {
            "kafka": {
                "brokers": ["k1:9092", "k2:9093"],
                "batch_size": 250,
                "batch_timeout_ms": 20,
                "compression_type": "zstd",
                "required_acks": 1,
                "enable_idempotency": False,
                "max_retries": 7,
                "retry_backoff_ms": 300,
                "librdkafka": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"},
            }
        }
    ).kafka
    config = producer_config(kafka)
    assert config["bootstrap.servers"] == "k1:9092,k2:9093"
    assert config["batch.num.messages"] == 250
    assert config["linger.ms"] == 20
    assert config["compression.type"] == "zstd"
    assert config["acks"] == 1
    assert config["enable.idempotence"] is False
    assert config["retries"] == 7
    assert config["retry.backoff.ms"] == 300
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["partitioner"] == "murmur2_random"
    assert "sasl.password" not in config


def test_secrets_come_only_from_the_environment_and_are_redacted_for_logs(monkeypatch) -> None:
    settings = settings_from_mapping(
        {"kafka": {"sasl_password_env": "MY_SASL", "secret_envs": {"ssl.key.password": "MY_KEY_PASS"}}}
    )
    monkeypatch.setenv("MY_SASL", "p4ss-word")
    monkeypatch.setenv("MY_KEY_PASS", "k3y-pass")
    config = producer_config(settings.kafka, settings.kafka_secrets())
    assert config["sasl.password"] == "p4ss-word"
    assert config["ssl.key.password"] == "k3y-pass"
    shown = repr(redacted(config))
    assert "p4ss-word" not in shown and "k3y-pass" not in shown
    monkeypatch.delenv("MY_SASL")
    assert "sasl.password" not in producer_config(settings.kafka, settings.kafka_secrets())


def test_the_documented_sasl_ssl_example_is_accepted_by_librdkafka(monkeypatch, tmp_path) -> None:
    """The SASL_SSL example of docs/deploy.md, as written there: every client gets the connection's
    security properties, the password only from the environment, and librdkafka accepts them."""
    import re
    from pathlib import Path

    import trustme
    import yaml
    from confluent_kafka import Consumer, Producer

    from optionstream_pipeline.kafka.admin import connection_properties

    doc = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    security = doc.split("## Security", 1)[1]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", security, re.DOTALL)[1])
    ca = tmp_path / "kafka-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    example["kafka"]["librdkafka"]["ssl.ca.location"] = str(ca)  # the example's path, made real here
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "sasl-canary-31c8")
    settings = settings_from_mapping(example)
    config = producer_config(settings.kafka, settings.kafka_secrets())
    connection = connection_properties(config)
    assert connection["security.protocol"] == "SASL_SSL" and connection["sasl.mechanism"] == "SCRAM-SHA-512"
    assert connection["sasl.username"] == "optionstream" and connection["sasl.password"] == "sasl-canary-31c8"
    assert connection["ssl.ca.location"] == str(ca)
    assert "sasl-canary-31c8" not in repr(redacted(config))
    Producer(config).flush(0)  # librdkafka refuses an unknown property or a bad value at construction
    Consumer({**connection, "group.id": "optionstream-doc-example"}).close()
