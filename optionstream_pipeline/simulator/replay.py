"""Replay of a recorded Deribit WebSocket session (the ``.ws.log`` format of the fixtures README).

Line 1 ``<url> <-> <unix s>`` (connected), line 2 ``<url> <- <unix s>: <json sent>``, every other line
``<receive time, unix s>: <json received>``.  Every recorded ``subscription`` frame whose channel the
client subscribed is sent byte-for-byte as recorded, in order, with the recorded spacing divided by
``speed`` (``None``: as fast as possible).  Each session replays from the start of the recording at
its first subscribe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from optionstream_pipeline.deribit.instruments import InstrumentNameError, parse_option_name
from optionstream_pipeline.simulator.universe import Instrument, settlement_period

_RECEIVED = re.compile(r"^(?P<time>\d+(?:\.\d+)?): (?P<text>.*)$", re.DOTALL)
_SENT = re.compile(r"^(?P<url>\S+) <- (?P<time>\d+(?:\.\d+)?): (?P<text>.*)$", re.DOTALL)
_CONNECTED = re.compile(r"^(?P<url>\S+) <-> (?P<time>\d+(?:\.\d+)?)$")


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One received frame: local receive time, its channel (None if not a subscription) and exact text."""

    received_s: float
    channel: str | None
    text: str


@dataclass
class Recording:
    url: str = ""
    connected_s: float = 0.0
    sent: list[tuple[float, str]] = field(default_factory=list)
    received: list[RecordedFrame] = field(default_factory=list)

    @property
    def subscription_frames(self) -> list[RecordedFrame]:
        return [f for f in self.received if f.channel is not None]

    @property
    def channels(self) -> list[str]:
        return list(dict.fromkeys(f.channel for f in self.subscription_frames if f.channel))


def parse_ws_log(path: str | Path) -> Recording:
    """Parse a ``.ws.log``; blank lines are ignored, a frame's text is kept exactly as recorded."""
    recording = Recording()
    with open(path, encoding="utf-8", newline="") as lines:
        for line in lines:
            line = line.rstrip("\r\n")
            if not line:
                continue
            if match := _CONNECTED.match(line):
                recording.url, recording.connected_s = match["url"], float(match["time"])
            elif match := _SENT.match(line):
                recording.sent.append((float(match["time"]), match["text"]))
            elif match := _RECEIVED.match(line):
                text = match["text"]
                recording.received.append(RecordedFrame(float(match["time"]), _channel_of(text), text))
            else:
                raise ValueError(f"{path}: unrecognised line {line[:80]!r}")
    return recording


def _channel_of(text: str) -> str | None:
    try:
        message = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    if isinstance(message, dict) and message.get("method") == "subscription":
        return message.get("params", {}).get("channel")
    return None


class _Cursor:
    __slots__ = ("position", "started_s")

    def __init__(self, started_s: float) -> None:
        self.position = 0
        self.started_s = started_s


class ReplaySource:
    """A data source playing a :class:`Recording` to each subscribing session."""

    raw_requires_auth = False

    def __init__(self, recording: Recording, speed: float | None = 1.0) -> None:
        self.recording = recording
        self.speed = speed
        self._frames = [(f.received_s, f.channel, f.text.encode()) for f in recording.subscription_frames]
        self._origin = self._frames[0][0] if self._frames else 0.0
        self._channels = set(recording.channels)
        self._cursors: dict[object, _Cursor] = {}

    def accepts(self, channel: str) -> bool:
        return channel in self._channels

    def on_subscribed(self, exchange, session, channel: str, now_s: float) -> None:
        self._cursors.setdefault(session, _Cursor(now_s))

    def due_s(self, cursor: _Cursor, received_s: float) -> float:
        if not self.speed:
            return cursor.started_s
        return cursor.started_s + (received_s - self._origin) / self.speed

    def advance(self, exchange, now_s: float, halted: bool) -> None:
        if halted:
            return
        for session, cursor in list(self._cursors.items()):
            if session.closed:
                del self._cursors[session]
                continue
            while cursor.position < len(self._frames):
                received_s, channel, payload = self._frames[cursor.position]
                if self.due_s(cursor, received_s) > now_s:
                    break
                if channel in session.channels:
                    session.deliver(channel, payload)
                cursor.position += 1

    def finished(self, session) -> bool:
        cursor = self._cursors.get(session)
        return cursor is not None and cursor.position >= len(self._frames)

    def index_price(self) -> float | None:
        return None  # the recording has tickers, not the index itself

    def time_ms(self, now_s: float) -> int:
        return int(now_s * 1000)  # each session plays the recording from its own start: no one clock

    def instruments_json(self, currency: str, expired: bool) -> list[dict]:
        """Instrument objects for the options named in the recording's channels."""
        if expired:
            return []
        names = dict.fromkeys(c.split(".")[1] for c in self._channels if c.count(".") == 2)
        objects = []
        for number, name in enumerate(names):
            try:
                parsed = parse_option_name(name)
            except InstrumentNameError:
                continue
            if currency in (parsed.currency, "any"):
                instrument = Instrument(
                    name,
                    parsed.expiry,
                    parsed.strike,
                    parsed.option_type,
                    100_000 + number,
                    int(self._origin * 1000) - 86_400_000,
                    settlement_period(parsed.expiry),
                    parsed.currency,
                )
                objects.append(instrument.to_json())
        return objects
