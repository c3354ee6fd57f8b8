"""Topic administration: make sure the book topic exists with the configured partitions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.kafka.logs import librdkafka_logger

log = logging.getLogger(__name__)


class BrokerUnreachableError(ConnectionError):
    """No Kafka broker answered; the message names the bootstrap servers tried."""


def connection_properties(client_config: Mapping[str, Any]) -> dict[str, Any]:
    """The properties every client needs to reach the cluster (servers, security, client id), and
    nothing producer- or consumer-specific, so that one configuration serves every kind of client."""
    return {
        key: value
        for key, value in client_config.items()
        if key == "bootstrap.servers" or key.startswith(("security.", "sasl.", "ssl.", "client."))
    }


def admin_client(client_config: Mapping[str, Any]) -> AdminClient:
    """An AdminClient sharing the producer's connection and security properties."""
    return AdminClient({**connection_properties(client_config), "logger": librdkafka_logger()})


def topic_partitions(client_config: Mapping[str, Any], topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partitions the topic has now; raises naming the topic when it does not exist."""
    admin = admin_client(client_config)
    try:
        metadata = admin.list_topics(timeout=timeout_s)  # naming the topic could auto-create it
    except KafkaException as exc:
        admin = None
        bootstrap = client_config.get("bootstrap.servers", "?")
        raise BrokerUnreachableError(
            f"Kafka brokers {bootstrap} unreachable within {timeout_s:.0f} s: {exc.args[0].str()}"
        ) from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise LookupError(f"topic {topic!r} does not exist (yet): start capture first, or check kafka.topic")
    return sorted(described.partitions)


def ensure_topic(
    client_config: dict[str, Any],
    topic: str,
    partitions: int,
    replication_factor: int,
    timeout_s: float = 10.0,
) -> int:
    """Create ``topic`` when it is missing; return its partition count.

    An existing topic is left as it is (its partition count may differ from the setting: changing
    it would move keys between partitions and break per-instrument order, so it is only logged).
    """
    admin = admin_client(client_config)
    bootstrap = client_config.get("bootstrap.servers", "?")
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin = None  # released now, so that it says nothing after the error is reported
        raise BrokerUnreachableError(
            f"Kafka brokers {bootstrap} unreachable within {timeout_s:.0f} s: {exc.args[0].str()}"
        ) from None
    existing = metadata.topics.get(topic)
    if existing is not None and existing.error is None:
        count = len(existing.partitions)
        if count != partitions:
            log.warning("topic %s has %d partitions (setting says %d): left as it is", topic, count, partitions)
        return count
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    try:
        futures[topic].result(timeout=timeout_s)
        log.info("created topic %s with %d partitions", topic, partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    return partitions
