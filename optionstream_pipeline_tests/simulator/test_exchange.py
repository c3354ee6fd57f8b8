"""Session logic without sockets: requests in, frames out, time passed by hand."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import msgspec
import pytest

from optionstream_pipeline.simulator.credits import RateLimits, SessionCredits, TokenBucket
from optionstream_pipeline.simulator.exchange import Exchange, MarketSource, Session
from optionstream_pipeline.simulator.faults import Faults, Lifecycle, register_control_methods
from optionstream_pipeline.simulator.market import Market
from optionstream_pipeline.simulator.settings import SimulatorSettings

T0 = datetime(2025, 5, 8, 12, tzinfo=UTC).timestamp()


class FakeIO:
    def __init__(self) -> None:
        self.aborted = False
        self.close_request: tuple[int, str] | None = None

    def wake(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    def close(self, code: int, reason: str) -> None:
        self.close_request = (code, reason)


class Harness:
    def __init__(self, **settings) -> None:
        settings.setdefault("max_instruments", 6)
        self.now = T0
        self.settings = SimulatorSettings(clock=lambda: self.now, **settings)
        self.market = Market(self.settings.market_settings(), T0)
        self.exchange = Exchange(self.settings, MarketSource(self.market, self.settings, T0), T0)
        self.faults = Faults(self.exchange, lambda: self.now)
        register_control_methods(self.exchange, self.faults, Lifecycle(self.exchange, lambda: self.now))
        self.io = FakeIO()
        self.session = self.exchange.open_session(self.io, "test", T0)

    def frames(self, session: Session | None = None) -> list:
        outbox = (session or self.session).outbox
        frames = [msgspec.json.decode(f) if f[:1] == b"{" and f.endswith(b"}") else f for f in outbox]
        outbox.clear()
        return frames

    def call(self, method: str, params: dict | None = None, request_id: int = 1) -> dict:
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        self.exchange.handle_frame(self.session, msgspec.json.encode(frame).decode(), self.now)
        while True:  # the reply; frames queued before it are dropped, those after it kept
            message = msgspec.json.decode(self.session.outbox.popleft())
            if message.get("id") == request_id:
                return message

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.exchange.advance(self.now)


def test_replies_carry_timing_and_testnet() -> None:
    harness = Harness(testnet=True)
    reply = harness.call("public/hello", {"client_name": "t", "client_version": "1"}, request_id=42)
    assert reply["id"] == 42 and reply["result"] == {"version": "1.2.26"}
    assert reply["testnet"] is True and reply["usDiff"] == reply["usOut"] - reply["usIn"] >= 0
    assert harness.session.client_name == "t"


@pytest.mark.parametrize(
    ("frame", "code", "has_id"),
    [
        ("{not json", -32700, False),
        ('{"jsonrpc":"2.0","id":3,"method":"public/nope","params":{}}', -32601, True),
        ('{"jsonrpc":"2.0","id":4,"method":"public/set_heartbeat","params":{"interval":5}}', -32602, True),
        ('{"jsonrpc":"2.0","id":5,"method":"public/subscribe","params":{"channels":"x"}}', -32602, True),
    ],
)
def test_error_replies(frame: str, code: int, has_id: bool) -> None:
    harness = Harness()
    harness.exchange.handle_frame(harness.session, frame, harness.now)
    (reply,) = harness.frames()
    assert reply["error"]["code"] == code and ("id" in reply) == has_id
    assert {"usIn", "usOut", "usDiff", "testnet"} <= reply.keys()


def test_oversized_frame_is_refused_with_32600() -> None:
    harness = Harness()
    channels = [f"book.BTC-9MAY25-{100000 + i}-C.100ms" for i in range(1200)]
    frame = msgspec.json.encode(
        {"jsonrpc": "2.0", "id": 9, "method": "public/subscribe", "params": {"channels": channels}}
    )
    assert len(frame) > 32 * 1024
    harness.exchange.handle_frame(harness.session, frame.decode(), harness.now)
    (reply,) = harness.frames()
    assert reply["error"] == {"message": "request entity too large", "code": -32600} and reply["id"] == 9
    assert harness.session.channels == {}


def test_subscribe_leaves_out_unknown_and_rejected_channels_and_snapshots_follow() -> None:
    harness = Harness()
    a, b = harness.market.instruments()[:2]
    harness.faults.reject_channel(f"book.{b}.*")
    wanted = [f"book.{a}.100ms", f"book.{b}.100ms", "book.BTC-1JAN20-1-C.100ms", "nonsense", "platform_state"]
    harness.exchange.handle_frame(
        harness.session,
        msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {"channels": wanted}}),
        harness.now,
    )
    reply, snapshot = harness.frames()
    assert reply["result"] == [f"book.{a}.100ms", "platform_state"]
    assert snapshot["params"]["data"]["type"] == "snapshot"
    assert harness.call("public/unsubscribe", {"channels": [f"book.{a}.100ms", "nope"]})["result"] == [
        f"book.{a}.100ms"
    ]
    assert harness.call("public/unsubscribe_all")["result"] == "ok" and harness.session.channels == {}


def test_raw_book_needs_auth_and_auth_checks_credentials() -> None:
    harness = Harness(client_id="id", client_secret="s3cret")
    name = harness.market.instruments()[0]
    raw = {"channels": [f"book.{name}.raw"]}
    assert harness.call("public/subscribe", raw)["error"]["code"] == 13778
    bad = harness.call("public/auth", {"grant_type": "client_credentials", "client_id": "id", "client_secret": "x"})
    assert bad["error"]["code"] == 13004 and not harness.session.authed
    good = harness.call(
        "public/auth", {"grant_type": "client_credentials", "client_id": "id", "client_secret": "s3cret"}
    )["result"]
    assert {"access_token", "refresh_token", "expires_in", "scope", "token_type"} <= good.keys()
    assert harness.call("public/subscribe", raw)["result"] == [f"book.{name}.raw"]
    refreshed = harness.call("public/auth", {"grant_type": "refresh_token", "refresh_token": good["refresh_token"]})
    assert "access_token" in refreshed["result"]


def test_heartbeat_sends_test_requests_and_closes_a_silent_client() -> None:
    harness = Harness(min_heartbeat_interval_s=1)
    assert harness.call("public/set_heartbeat", {"interval": 1})["result"] == "ok"
    harness.tick(1.01)
    assert [f["params"]["type"] for f in harness.frames() if f.get("method") == "heartbeat"] == [
        "heartbeat",
        "test_request",
    ]
    harness.call("public/test")
    harness.tick(1.0)
    assert harness.io.close_request is None
    harness.frames()
    harness.tick(1.0)  # the test_request of the previous tick went unanswered
    assert harness.io.close_request is not None


def test_credits_refuse_with_10028_and_refill() -> None:
    limits = RateLimits(request_cost=500, credit_capacity=1000, credit_refill_per_s=500)
    harness = Harness(rate_limits=limits)
    assert "result" in harness.call("public/test")
    assert "result" in harness.call("public/test")
    assert harness.call("public/test")["error"] == {"message": "too_many_requests", "code": 10028}
    harness.now += 1.0
    assert "result" in harness.call("public/test")


def test_token_buckets_for_subscribe_and_get_instruments() -> None:
    credits = SessionCredits(RateLimits(), 0.0)
    granted = [credits.allow("public/subscribe", 0.0) for _ in range(15)]
    assert granted == [True] * 10 + [False] * 5
    assert sum(credits.allow("public/subscribe", 1.0) for _ in range(5)) == 3
    assert [credits.allow("public/get_instruments", 1.0) for _ in range(6)] == [True] * 5 + [False]
    assert not credits.allow("public/get_instruments", 5.0) and credits.allow("public/get_instruments", 12.0)
    bucket = TokenBucket(2, 1, 0.0)
    assert bucket.available(100.0) == 2


def test_maintenance_answers_11051_and_toggles_platform_state() -> None:
    harness = Harness()
    harness.call("public/subscribe", {"channels": ["platform_state"]})
    harness.faults.maintenance(5, close_connections=False)
    assert harness.frames()[0]["params"]["data"] == {"price_index": "btc_usd", "locked": True}
    assert harness.call("public/test")["error"]["code"] == 11051
    harness.tick(5.01)
    assert harness.frames()[0]["params"]["data"]["locked"] is False
    assert "result" in harness.call("public/test")


def test_corrupt_book_replaces_fields_of_exactly_one_message_of_that_channel() -> None:
    harness = Harness(events_per_second=500)
    name = harness.market.instruments()[0]
    channel = f"book.{name}.raw"
    harness.session.authed = True
    harness.call("public/subscribe", {"channels": [channel]})
    harness.frames()  # the snapshot
    harness.faults.corrupt_book(name, {"bids": "oops", "asks": [["new", 0.1]]}, "raw")
    for _ in range(100):
        harness.tick(0.01)
    received = [f["params"]["data"] for f in harness.frames()]
    assert len(received) > 2
    assert (received[0]["bids"], received[0]["asks"]) == ("oops", [["new", 0.1]])
    assert received[0]["instrument_name"] == name and isinstance(received[0]["change_id"], int)
    assert all(isinstance(data["bids"], list) for data in received[1:])  # one message only
    assert all(b["prev_change_id"] == a["change_id"] for a, b in itertools.pairwise(received))
    assert not harness.session.corrupt_next


def test_skip_change_swallows_exactly_one_message_of_that_channel() -> None:
    harness = Harness(events_per_second=500)
    name = harness.market.instruments()[0]
    channel = f"book.{name}.raw"
    harness.session.authed = True
    harness.call("public/subscribe", {"channels": [channel]})
    snapshot = harness.frames()[0]["params"]["data"]
    harness.faults.skip_change(name, "raw")
    for _ in range(100):
        harness.tick(0.01)
    received = [f["params"]["data"] for f in harness.frames()]
    assert len(received) > 2
    assert received[0]["prev_change_id"] != snapshot["change_id"]  # the gap
    assert all(b["prev_change_id"] == a["change_id"] for a, b in itertools.pairwise(received))
    assert harness.market.book_at(name, "raw", received[0]["prev_change_id"]).change_id == received[0]["prev_change_id"]


def test_error_without_id_and_malformed_frame() -> None:
    harness = Harness()
    harness.faults.error()
    harness.faults.malformed()
    error, malformed = harness.frames()
    assert "id" not in error and error["error"] == {"message": "too_many_requests", "code": 10028}
    assert {"usIn", "usOut", "usDiff", "testnet"} <= error.keys()
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(malformed)


def test_control_methods_do_not_target_the_caller() -> None:
    harness = Harness()
    other = harness.exchange.open_session(FakeIO(), "victim", T0)
    reply = harness.call("simulator/drop")
    assert reply["result"] == [other.id] and other.io.aborted and not harness.io.aborted
    assert harness.call("simulator/stall", {"bogus": 1})["error"]["code"] == -32602
    assert harness.call("simulator/sessions")["result"][0]["id"] == harness.session.id


def test_a_published_frame_is_encoded_once_for_all_subscribers() -> None:
    harness = Harness(events_per_second=1000)
    name = harness.market.instruments()[0]
    channel = f"book.{name}.100ms"
    other = harness.exchange.open_session(FakeIO(), "second", T0)
    for session in (harness.session, other):
        harness.exchange.handle_frame(
            session,
            msgspec.json.encode(
                {"jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {"channels": [channel]}}
            ),
            T0,
        )
        session.outbox.clear()
    for _ in range(30):
        harness.tick(0.01)
    assert harness.session.outbox and len(harness.session.outbox) == len(other.outbox)
    assert all(a is b for a, b in zip(harness.session.outbox, other.outbox, strict=True))
