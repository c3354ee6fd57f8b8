"""Helpers shared by the Dagster-layer tests: settings resources for a test, and a simulator."""

from __future__ import annotations

from pathlib import Path

from optionstream_pipeline.orchestration.resources import REPO_CONFIG_PATH, OptionStreamSettings


def settings_resource(**overrides: object) -> OptionStreamSettings:
    """The shipped config with dotted-key overrides (values as YAML text, like the environment)."""
    return OptionStreamSettings(
        config_path=str(REPO_CONFIG_PATH), overrides={key: _yaml(value) for key, value in overrides.items()}
    )


def _yaml(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def capture_overrides(url: str, bootstrap: str, topic: str, universe: Path) -> dict[str, object]:
    """Point a capture at a simulator and a broker, fast timings, no fixed metrics port."""
    return {
        "deribit.websocket_url": url,
        "deribit.instruments": "auto",
        "deribit.book_interval": "100ms",
        "deribit.reconnect.initial_backoff_ms": 50,
        "deribit.reconnect.max_backoff_ms": 500,
        "kafka.brokers": [bootstrap],
        "kafka.topic": topic,
        "kafka.partitions": 4,
        "kafka.batch_timeout_ms": 5,
        "kafka.flush_timeout_s": 5,
        "capture.metrics.enabled": False,
        "discovery.universe_path": str(universe),
    }
