"""Session-wide Kafka fixtures.

Every test that needs Kafka gets it from ``kafka_bootstrap``: an existing broker named by the
``KAFKA_BOOTSTRAP`` environment variable (for example Apache Kafka from docker-compose.yml), or
else the embedded Tansu broker, started once per session. Tests that rely on Apache Kafka
behaviour Tansu lacks are marked ``real_kafka`` and skipped on Tansu.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.kafka.broker import EmbeddedBroker
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.support.tcp_proxy import TcpProxy
from optionstream_pipeline_tests.support.waiting import wait_until

pytest_plugins = [  # the shared archives: a simulator run archived through the broker; a synthetic one
    "optionstream_pipeline_tests.archive.scenario",
    "optionstream_pipeline_tests.archive.synthetic",
]

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP"
DEFAULT_TOPIC_PARTITIONS = 4
_ADMIN_TIMEOUT_S = 30.0


def _external_bootstrap() -> str | None:
    return os.environ.get(BOOTSTRAP_ENV) or None


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``bootstrap.servers`` of the broker for this session: $KAFKA_BOOTSTRAP or an embedded one."""
    external = _external_bootstrap()
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    """One AdminClient for the session's broker."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture(scope="session")
def broker_is_tansu() -> bool:
    """Whether the session's broker is Tansu (the embedded one, or an external one by cluster id).

    Decided without starting the embedded broker, so that skipping ``real_kafka`` tests costs nothing.
    """
    external = _external_bootstrap()
    if not external:
        return True
    metadata = AdminClient({"bootstrap.servers": external}).list_topics(timeout=_ADMIN_TIMEOUT_S)
    return "tansu" in (metadata.cluster_id or "").lower()


@pytest.fixture(autouse=True)
def _skip_real_kafka_on_tansu(request: pytest.FixtureRequest) -> None:
    """Skip tests marked ``real_kafka`` on Tansu, giving the marker's reason when there is one."""
    marker = request.node.get_closest_marker("real_kafka")
    if marker is None or not request.getfixturevalue("broker_is_tansu"):
        return
    why = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
    detail = f": {why}" if why else ""
    pytest.skip(
        f"needs Apache Kafka semantics the embedded Tansu broker lacks{detail} "
        f"(set {BOOTSTRAP_ENV} to an Apache Kafka broker to run it)"
    )


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest, kafka_admin: AdminClient) -> Iterator[str]:
    """A fresh topic with a unique name (4 partitions; parametrize indirectly to change that)."""
    partitions = int(getattr(request, "param", DEFAULT_TOPIC_PARTITIONS))
    name = _unique_topic_name(request.node.name)
    futures = kafka_admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=-1)], operation_timeout=_ADMIN_TIMEOUT_S
    )
    futures[name].result(timeout=_ADMIN_TIMEOUT_S)
    wait_until(
        lambda: _partition_count(kafka_admin, name) == partitions,
        timeout=_ADMIN_TIMEOUT_S,
        message=f"topic {name} with {partitions} partitions in the metadata",
    )
    yield name
    # Best effort: a leftover uniquely named topic harms nobody.
    for future in kafka_admin.delete_topics([name], operation_timeout=_ADMIN_TIMEOUT_S).values():
        with contextlib.suppress(TimeoutError):
            future.exception(timeout=_ADMIN_TIMEOUT_S)


def _unique_topic_name(test_name: str) -> str:
    """Readable in broker tools, unique across runs against a long-lived external broker."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", test_name).strip("-")[:80]
    return f"test-{readable}-{uuid.uuid4().hex[:10]}"


def _partition_count(admin: AdminClient, topic: str) -> int:
    metadata = admin.list_topics(topic, timeout=5)
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        return 0
    return len(described.partitions)


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatorThread]]:
    """Start Deribit simulators (``simulator(max_instruments=20, ...)``); each stops after the test."""
    started: list[SimulatorThread] = []

    def start(**settings: Any) -> SimulatorThread:
        sim = SimulatorThread(SimulatorSettings(**settings)).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def proxied_broker() -> Iterator[tuple[TcpProxy, str]]:
    """A separate embedded broker reachable only through a ``TcpProxy``: yields (proxy, bootstrap).

    The broker advertises the proxy's port, so every client connection, not only the bootstrap,
    crosses the proxy, and ``proxy.block()`` / ``proxy.drop_connections()`` act as a network outage
    while the broker keeps its state.
    """
    if _external_bootstrap():
        pytest.skip(f"needs the embedded broker behind a proxy; {BOOTSTRAP_ENV} points at an external one")
    proxy = TcpProxy().start()
    broker = EmbeddedBroker(advertised_port=proxy.port)
    try:
        broker.start()
        proxy.target = ("127.0.0.1", broker.port)
        yield proxy, f"127.0.0.1:{proxy.port}"
    finally:
        # Cutting the clients off first lets the broker stop at once instead of draining their
        # connections for seconds.
        proxy.stop()
        broker.stop()
