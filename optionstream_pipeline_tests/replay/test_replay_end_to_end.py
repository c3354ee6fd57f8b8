"""``optionstream replay`` as a researcher uses it: the real command on a real archive, and a plain
``websockets`` client written from Deribit's documentation (JSON-RPC subscribe, read notifications).

The archive is the shared synthetic one (hours of records across checkpoints, gaps, disconnects,
unsubscribed books, a capture session killed without markers and a new topic incarnation).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from websockets.sync.client import connect

from optionstream_pipeline.cli import main
from optionstream_pipeline.query.database import open_archive
from optionstream_pipeline_tests.archive.synthetic import Archive
from optionstream_pipeline_tests.support.books import T0, as_time
from optionstream_pipeline_tests.support.replay_server import DEADLINE_S, ReplayServer

START = as_time(T0 * 1000) + timedelta(minutes=50)  # 08:50: across 09:00, the incarnation change, the
STOP = as_time(T0 * 1000) + timedelta(hours=3, minutes=30)  # empty hour, the killed session: to 11:30


@pytest.fixture(scope="module")
def config(synthetic_archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("replay") / "config.yaml"
    path.write_text(yaml.safe_dump({"archive": {"path": str(synthetic_archive.root)}}))
    return str(path)


@pytest.fixture(scope="module")
def server(config: str) -> Iterator[ReplayServer]:
    window = ["--from", START.isoformat(), "--to", STOP.isoformat()]
    with ReplayServer(config, *window, "--as-fast-as-possible", "--start-delay", "0.2") as replay:
        yield replay


def call(ws, request_id: int, method: str, **params) -> object:
    """A JSON-RPC request, as Deribit's documentation writes them; returns its result."""
    ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    while True:
        message = json.loads(ws.recv(timeout=DEADLINE_S))
        if message.get("id") == request_id:
            return message["result"]


def expected_stream(connection, names: list[str]) -> tuple[dict, list[tuple]]:
    """What a client must receive, from the archive itself: the reliable books at START, then each
    snapshot, and each change of a book that has had one (since START, or a later snapshot)."""
    start = connection.execute(
        "SELECT symbol, change_id, bids, asks FROM books_at(?) WHERE reliable", [START]
    ).fetchall()
    books = {s: (c, [["new", b["price"], b["amount"]] for b in bids], [["new", a["price"], a["amount"]] for a in asks])
             for s, c, bids, asks in start if s in names}  # fmt: skip
    rows = connection.execute(
        """SELECT symbol, record_type, change_id, prev_change_id,
                  list({'a': action, 'p': price, 'n': amount} ORDER BY level) FILTER (WHERE side = 'bid'),
                  list({'a': action, 'p': price, 'n': amount} ORDER BY level) FILTER (WHERE side = 'ask')
           FROM book WHERE book_time > ? AND book_time <= ? AND list_contains(?, symbol)
           GROUP BY symbol, record_type, change_id, prev_change_id, book_time, topic_incarnation, kafka_partition,
                    kafka_offset
           ORDER BY book_time, topic_incarnation, kafka_partition, kafka_offset""",
        [START, STOP, names],
    ).fetchall()
    synced = set(books)
    stream = []
    for symbol, kind, change_id, prev, bids, asks in rows:
        if kind in ("gap", "disconnect", "unsubscribed"):
            synced.discard(symbol)
            continue
        if kind == "snapshot":
            synced.add(symbol)
        if symbol in synced:
            levels = [[[level["a"], level["p"], level["n"]] for level in side or []] for side in (bids, asks)]
            stream.append((symbol, kind, change_id, prev if kind == "change" else None, *levels))
    return books, stream


def rebuilt(received: list[dict]) -> dict[str, tuple[list, list]]:
    """The books a client builds from what it received: snapshots restart, changes update."""
    books: dict[str, tuple[dict, dict]] = {}
    for data in received:
        if data["type"] == "snapshot":
            books[data["instrument_name"]] = ({}, {})
        for side, levels in zip(books[data["instrument_name"]], (data["bids"], data["asks"]), strict=True):
            for action, price, amount in levels:
                if action == "delete" or amount == 0:
                    side.pop(price, None)
                else:
                    side[price] = amount
    return {name: (sorted(bids.items(), reverse=True), sorted(asks.items())) for name, (bids, asks) in books.items()}


def test_a_deribit_client_gets_the_book_at_the_start_then_every_change_in_order(
    server: ReplayServer, synthetic_archive: Archive
) -> None:
    replay, url = server, server.url
    connection = open_archive(synthetic_archive.root, ":memory:")
    with connect(url) as ws:
        call(ws, 1, "public/hello", client_name="my-strategy", client_version="1.0")
        instruments = call(ws, 2, "public/get_instruments", currency="BTC", kind="option")
        names = sorted(i["instrument_name"] for i in instruments)
        assert names and all(i["kind"] == "option" and i["is_active"] for i in instruments)
        channels = [f"book.{name}.100ms" for name in names]
        assert sorted(call(ws, 3, "public/subscribe", channels=[*channels, "book.BTC-27JUN25-1-C.100ms"])) == channels
        books, expected = expected_stream(connection, names)
        received: list[dict] = []
        while len(received) < len(books) + len(expected):
            message = json.loads(ws.recv(timeout=DEADLINE_S))
            if message.get("method") == "subscription":
                assert message["params"]["channel"] == f"book.{message['params']['data']['instrument_name']}.100ms"
                received.append(message["params"]["data"])
        replay.wait_for("replay finished")
    first = received[: len(books)]
    assert {d["instrument_name"]: (d["change_id"], d["bids"], d["asks"]) for d in first} == books
    assert all(d["type"] == "snapshot" for d in first)
    got = [(d["instrument_name"], d["type"], d["change_id"], d.get("prev_change_id"), d["bids"], d["asks"])
           for d in received[len(books):]]  # fmt: skip
    assert got == expected
    at_stop = connection.execute("SELECT symbol, bids, asks FROM books_at(?) WHERE reliable", [STOP]).fetchall()
    client = rebuilt(received)
    for symbol, bids, asks in at_stop:
        assert client[symbol] == ([(b["price"], b["amount"]) for b in bids], [(a["price"], a["amount"]) for a in asks])


def test_the_command_refuses_a_window_without_data(config: str, capsys: pytest.CaptureFixture) -> None:
    early = ["--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T01:00:00Z"]
    assert main(["replay", "--config", config, *early]) == 1
    error = capsys.readouterr().err
    assert "optionstream replay: no archived data from 2020-01-01 00:00:00.000000 UTC" in error
    assert "the archive spans 2025-12-01 08:00" in error


def test_the_command_refuses_an_empty_window_and_a_bad_speed(config: str, capsys: pytest.CaptureFixture) -> None:
    moment = START.isoformat()
    assert main(["replay", "--config", config, "--from", moment, "--to", moment]) == 1
    assert "optionstream replay: an empty window:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["replay", "--config", config, "--from", moment, "--to", STOP.isoformat(), "--speed", "0"])
    assert exited.value.code == 2
    assert "'0' is not a speed" in capsys.readouterr().err


def test_an_archive_that_is_not_there_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"archive": {"path": str(tmp_path / "none")}}))
    assert main(["replay", "--config", str(path), "--from", START.isoformat(), "--to", STOP.isoformat()]) == 1
    assert "has no file yet" in capsys.readouterr().err


def subscribe_all(ws) -> int:
    """Subscribe to every book the replay lists; returns how many channels were accepted."""
    names = [i["instrument_name"] for i in call(ws, 1, "public/get_instruments", currency="BTC", kind="option")]
    return len(call(ws, 2, "public/subscribe", channels=[f"book.{name}.100ms" for name in names]))


def read_until_quiet(ws, quiet_s: float) -> list[dict]:
    """Every notification until none came for ``quiet_s`` (the window is played out)."""
    received = []
    while True:
        try:
            message = json.loads(ws.recv(timeout=quiet_s))
        except TimeoutError:
            return received
        if message.get("method") == "subscription":
            received.append(message["params"]["data"])


def test_two_clients_in_step_on_one_clock_and_a_late_joiner_continues_in_step(config: str) -> None:
    window = ["--from", START.isoformat(), "--to", (START + timedelta(minutes=20)).isoformat()]
    replay = ReplayServer(config, *window, "--speed", "600", "--start-delay", "0")  # 20 minutes in 2 s
    with replay, connect(replay.url) as first, connect(replay.url) as late:
        channels = subscribe_all(first)
        early = []
        while sum(data["type"] == "change" for data in early) < 20:  # the clock is well into the window
            early.append(json.loads(first.recv(timeout=DEADLINE_S))["params"]["data"])
        assert subscribe_all(late) == channels
        replay.wait_for("replay finished")
        early, joined = early + read_until_quiet(first, 0.5), read_until_quiet(late, 0.5)
    snapshots = [data for data in joined[:channels] if data["type"] == "snapshot"]
    following = joined[len(snapshots) :]
    assert snapshots and following, "the late client joined before or after the window played"
    assert following == early[len(early) - len(following) :]  # from its snapshots on, the same frames
    assert rebuilt(early) == rebuilt(joined)
