"""The embedded broker: lifecycle, a Kafka round trip, reachability, and a network outage via the proxy."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.kafka.broker import BrokerStartError, EmbeddedBroker, broker_reachable, free_port
from optionstream_pipeline_tests.support.tcp_proxy import TcpProxy
from optionstream_pipeline_tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
# How long a stalled path is watched to confirm that no delivery crosses it.
STALL_OBSERVATION_S = 1.0


def _producer(bootstrap: str) -> Producer:
    """The producer settings the product uses: no loss, no duplicates, compressed batches."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "snappy",
            "linger.ms": 5,
        }
    )


def _read_partition(bootstrap: str, topic: str, partition: int, at_least: int) -> list[Message]:
    """Every message of one partition, from the beginning up to the end seen after ``at_least``.

    Reading on to the partition end (not just ``at_least`` messages) is what makes the count an
    exact check: a duplicate would show up as an extra message.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 20,
        }
    )
    received: list[Message] = []

    def reached_end() -> bool:
        msg = consumer.poll(0.1)
        if msg is None:
            return False
        if msg.error() is not None:
            assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
            return len(received) >= at_least
        received.append(msg)
        return False

    try:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        wait_until(reached_end, timeout=30, interval=0, message=f"{at_least} messages in {topic}[{partition}]")
    finally:
        consumer.close()
    return received


# --- the session broker -----------------------------------------------------------------------


def test_produced_message_is_consumed_back(kafka_bootstrap: str, kafka_topic: str) -> None:
    producer = _producer(kafka_bootstrap)
    reports: list[tuple[KafkaError | None, Message]] = []
    producer.produce(
        kafka_topic,
        value=b'{"price": 0.0425}',
        key=b"BTC-27JUN25-100000-C",
        partition=2,
        headers=[("schema", b"book.v1")],
        on_delivery=lambda err, msg: reports.append((err, msg)),
    )
    assert producer.flush(30) == 0
    assert [err for err, _ in reports] == [None]

    [message] = _read_partition(kafka_bootstrap, kafka_topic, partition=2, at_least=1)
    assert message.key() == b"BTC-27JUN25-100000-C"
    assert message.value() == b'{"price": 0.0425}'
    assert message.headers() == [("schema", b"book.v1")]
    assert message.offset() == reports[0][1].offset()


def test_broker_reachable_for_a_running_broker(kafka_bootstrap: str) -> None:
    assert broker_reachable(kafka_bootstrap, timeout_s=10)


def test_broker_reachable_is_false_for_a_closed_port() -> None:
    assert not broker_reachable(f"127.0.0.1:{free_port()}", timeout_s=5)


def test_broker_reachable_is_false_for_a_non_kafka_listener() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        bootstrap = f"127.0.0.1:{silent.getsockname()[1]}"
        assert not broker_reachable(bootstrap, timeout_s=1)


# --- lifecycle of separate brokers --------------------------------------------------------------


def test_stop_releases_the_port_for_a_new_broker() -> None:
    with EmbeddedBroker() as first:
        port = first.port
        assert first.running
        assert broker_reachable(first.bootstrap, timeout_s=5)
    assert not first.running
    assert not broker_reachable(f"127.0.0.1:{port}", timeout_s=1)
    with EmbeddedBroker(port=port) as second:
        assert second.bootstrap == f"127.0.0.1:{port}"
        assert broker_reachable(second.bootstrap, timeout_s=5)
    second.stop()  # idempotent


def test_start_failure_names_the_cause_with_the_broker_output() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        broker = EmbeddedBroker(port=taken.getsockname()[1], start_timeout_s=10)
        with pytest.raises(BrokerStartError, match=r"exited with code .*broker output:\n.+"):
            broker.start()
    assert not broker.running


def test_broker_command_serves_until_sigint() -> None:
    port = free_port()
    script = (
        "import argparse, sys\n"
        "from optionstream_pipeline.kafka import broker\n"
        "parser = argparse.ArgumentParser()\n"
        "broker.add_parser(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.func(args))\n"
    )
    command = [sys.executable, "-c", script, "broker", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == f"127.0.0.1:{port}"
            assert broker_reachable(f"127.0.0.1:{port}", timeout_s=5)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert not broker_reachable(f"127.0.0.1:{port}", timeout_s=1)


# --- a network outage between clients and broker --------------------------------------------------


def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=-1)])
    futures[name].result(timeout=30)


def test_messages_flow_through_the_proxy(proxied_broker: tuple[TcpProxy, str]) -> None:
    proxy, bootstrap = proxied_broker
    _create_topic(bootstrap, "through-proxy", partitions=1)
    producer = _producer(bootstrap)
    for i in range(100):
        producer.produce("through-proxy", value=str(i).encode(), partition=0)
    assert producer.flush(30) == 0

    values = [m.value() for m in _read_partition(bootstrap, "through-proxy", 0, at_least=100)]
    assert values == [str(i).encode() for i in range(100)]
    assert proxy.accepted > 0


def test_broker_is_unreachable_while_the_path_is_stalled(proxied_broker: tuple[TcpProxy, str]) -> None:
    proxy, bootstrap = proxied_broker
    proxy.block()
    assert not broker_reachable(bootstrap, timeout_s=1)
    proxy.unblock()
    assert broker_reachable(bootstrap, timeout_s=10)


def test_idempotent_producer_delivers_exactly_once_in_order_after_an_outage(
    proxied_broker: tuple[TcpProxy, str],
) -> None:
    proxy, bootstrap = proxied_broker
    topic = "outage"
    _create_topic(bootstrap, topic, partitions=1)
    producer = _producer(bootstrap)
    reports: list[KafkaError | None] = []

    def produce(values: range) -> None:
        for i in values:
            producer.produce(topic, value=str(i).encode(), partition=0, on_delivery=lambda e, _m: reports.append(e))

    produce(range(10))
    assert producer.flush(30) == 0

    proxy.block()
    produce(range(10, 50))
    observe_until = time.monotonic() + STALL_OBSERVATION_S
    while time.monotonic() < observe_until:
        producer.poll(0.05)
    assert len(reports) == 10, "a message was delivered across a stalled network path"
    proxy.drop_connections()  # requests in flight are lost: the producer must retry them
    proxy.unblock()

    def all_reported() -> bool:
        producer.poll(0.05)
        return len(reports) == 50

    wait_until(all_reported, timeout=60, interval=0, message="delivery reports for all 50 messages")
    assert reports == [None] * 50
    values = [m.value() for m in _read_partition(bootstrap, topic, 0, at_least=50)]
    assert values == [str(i).encode() for i in range(50)]
