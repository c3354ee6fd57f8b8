"""Fault injection and lifecycle control, from Python (any thread) or over the wire (``simulator/*``).

Each public method runs its work on the server's event loop through ``runner`` (so it is safe to call
from a test thread) and returns the ids of the sessions it touched.  ``session=None`` targets every
client session: sessions that ever called a ``simulator/*`` method (control connections, e.g. the
``simulate-control`` CLI) are never targeted implicitly, so a control client does not drop itself.
The same operations are registered as JSON-RPC methods ``simulator/<name>`` with the same keyword
parameters (plus ``session``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

from optionstream_pipeline.deribit.protocol import ErrorCode
from optionstream_pipeline.simulator.exchange import MALFORMED_FRAME, Exchange, MarketSource, RpcError, Session

T = TypeVar("T")
Runner = Callable[[Callable[[], T]], T]


def run_inline(work: Callable[[], T]) -> T:
    return work()


class Faults:
    """Faults on live sessions.  See the package docstring for what each one looks like to a client."""

    def __init__(self, exchange: Exchange, clock: Callable[[], float], runner: Runner = run_inline) -> None:
        self._exchange = exchange
        self._clock = clock
        self._run = runner

    # -- targeting ----------------------------------------------------------------------------

    def _targets(self, session: int | None, caller: Session | None = None) -> list[Session]:
        sessions = self._exchange.sessions
        if session is not None:
            if session not in sessions:
                raise RpcError(ErrorCode.INVALID_PARAMS, data={"param": "session", "reason": "no such session"})
            return [sessions[session]]
        return [s for s in sessions.values() if not s.is_control and s is not caller]

    def _each(self, session: int | None, action: Callable[[Session], Any], caller: Session | None = None) -> list[int]:
        targets = self._targets(session, caller)
        for target in targets:
            action(target)
        return [t.id for t in targets]

    # -- faults -------------------------------------------------------------------------------

    def drop(self, session: int | None = None, *, _caller: Session | None = None) -> list[int]:
        """Abrupt TCP close: no close frame, queued frames are lost."""

        def drop_one(target: Session) -> None:
            target.closed = True
            target.io.abort()

        return self._run(lambda: self._each(session, drop_one, _caller))

    def stall(
        self,
        seconds: float | None = None,
        session: int | None = None,
        drop_frames: bool = False,
        *,
        _caller: Session | None = None,
    ) -> list[int]:
        """Stop writing to the client without closing, for ``seconds`` or until :meth:`clear`.

        Frames published meanwhile are queued and sent late (``drop_frames=True``: discarded, so the
        client also sees gaps).  Requests are still read and answered into the queue.
        """
        until = math.inf if seconds is None else self._clock() + float(seconds)

        def stall_one(target: Session) -> None:
            target.stalled_until, target.stall_drop = until, bool(drop_frames)

        return self._run(lambda: self._each(session, stall_one, _caller))

    def slow(self, delay_s: float, session: int | None = None, *, _caller: Session | None = None) -> list[int]:
        """Delay every outgoing frame by ``delay_s`` (0 restores full speed)."""

        def slow_one(target: Session) -> None:
            target.frame_delay_s = float(delay_s)

        return self._run(lambda: self._each(session, slow_one, _caller))

    def skip_change(
        self,
        instrument: str,
        interval: str | None = None,
        session: int | None = None,
        *,
        _caller: Session | None = None,
    ) -> list[int]:
        """Swallow the next book message of ``instrument`` (one interval or both) for the targets.

        The client sees a ``prev_change_id`` gap on the message after; the ground truth is unchanged.
        """
        channels = {f"book.{instrument}.{i}" for i in ((interval,) if interval else ("100ms", "raw"))}

        def skip_one(target: Session) -> None:
            target.drop_next |= channels

        return self._run(lambda: self._each(session, skip_one, _caller))

    def corrupt_book(
        self,
        instrument: str,
        fields: dict[str, Any],
        interval: str | None = None,
        session: int | None = None,
        *,
        _caller: Session | None = None,
    ) -> list[int]:
        """Replace fields of the next book message of ``instrument`` (e.g. ``{"bids": "oops"}``).

        The frame stays valid JSON but is not a Deribit book; the ground truth is unchanged, so the
        client that refuses it has lost that update.
        """
        channels = {f"book.{instrument}.{i}" for i in ((interval,) if interval else ("100ms", "raw"))}

        def corrupt_one(target: Session) -> None:
            target.corrupt_next |= {channel: dict(fields) for channel in channels}

        return self._run(lambda: self._each(session, corrupt_one, _caller))

    def malformed(self, session: int | None = None, *, _caller: Session | None = None) -> list[int]:
        """Send one text frame that is not valid JSON (a truncated subscription notification)."""
        return self._run(lambda: self._each(session, lambda t: t.send(MALFORMED_FRAME), _caller))

    def error(
        self,
        code: int = ErrorCode.TOO_MANY_REQUESTS,
        message: str | None = None,
        session: int | None = None,
        *,
        _caller: Session | None = None,
    ) -> list[int]:
        """Send an error frame without ``id`` (``{"jsonrpc","error":{code,message},"usIn",...}``)."""
        return self._run(
            lambda: self._each(session, lambda t: self._exchange.error_without_id(t, int(code), message), _caller)
        )

    def maintenance(
        self, seconds: float, close_connections: bool = True, *, _caller: Session | None = None
    ) -> list[int]:
        """Platform maintenance for ``seconds``, as Deribit runs it.

        ``platform_state`` subscribers get ``{"locked": true}``; every request is answered 11051
        (``simulator/*`` excepted); no market data is generated or published; with
        ``close_connections`` (default, what real Deribit does) every client session is then closed
        (close frame 1012 after the queued frames).  At the end, ``{"locked": false}`` goes to
        ``platform_state`` subscribers and data resumes.
        """

        def start() -> list[int]:
            self._exchange.maintenance_until = self._clock() + float(seconds)
            self._exchange.publish_platform_state(locked=True)
            if not close_connections:
                return []

            def close_one(target: Session) -> None:
                target.closed = True
                target.io.close(1012, "system_maintenance")

            return self._each(None, close_one, _caller)

        return self._run(start)

    def reject_channel(self, pattern: str, session: int | None = None, *, _caller: Session | None = None) -> list[int]:
        """Leave channels matching ``pattern`` (fnmatch, e.g. ``book.*-C.100ms``) out of subscribe
        results from now on, silently, like Deribit; ``session=None`` rejects it for everyone."""

        def reject() -> list[int]:
            if session is None:
                self._exchange.rejected_channels.append(pattern)
                return []
            return self._each(session, lambda t: t.rejected.append(pattern))

        return self._run(reject)

    def clear(self, session: int | None = None, *, _caller: Session | None = None) -> list[int]:
        """Undo stall, slow, pending skips and channel rejections; with ``session=None`` also the global
        rejections and any maintenance in progress."""

        def clear_one(target: Session) -> None:
            target.stalled_until, target.stall_drop, target.frame_delay_s = 0.0, False, 0.0
            target.drop_next.clear()
            target.rejected.clear()
            target.io.wake()

        def clear_all() -> list[int]:
            if session is None:
                self._exchange.rejected_channels.clear()
                if self._exchange.maintenance_until:
                    self._exchange.maintenance_until = self._clock()
            return self._each(session, clear_one, _caller)

        return self._run(clear_all)


class Lifecycle:
    """Instrument lifecycle by hand (tests, demo) and freezing the market."""

    def __init__(self, exchange: Exchange, clock: Callable[[], float], runner: Runner = run_inline) -> None:
        self._exchange = exchange
        self._clock = clock
        self._run = runner

    def _source(self) -> MarketSource:
        source = self._exchange.source
        if not isinstance(source, MarketSource):
            raise RpcError(ErrorCode.BAD_REQUEST, data={"reason": "no random market in replay/load mode"})
        return source

    def _publish(self, events_of: Callable[[MarketSource, float], list]) -> list[str]:
        def work() -> list[str]:
            events = events_of(self._source(), self._clock())
            self._exchange.publish_instrument_events(events)
            return [f"{e.state} {e.instrument_name}" for e in events]

        return self._run(work)

    def expire_instrument(self, instrument: str) -> list[str]:
        """Expire one instrument now: ``closed`` + ``settled`` on ``instrument.state``, book stops."""
        return self._publish(lambda source, now: source.market.expire_instrument(instrument, now))

    def roll_expiry(self) -> list[str]:
        """Expire every instrument of the nearest expiry now."""
        return self._publish(lambda source, now: source.market.roll_nearest_expiry(now))

    def create_expiry(self, expiry: date | str | None = None) -> list[str]:
        """List a new expiry now (``created`` events); default: the first future day without one."""
        day = date.fromisoformat(expiry) if isinstance(expiry, str) else expiry
        return self._publish(lambda source, now: source.market.create_expiry(now, day))


def register_control_methods(exchange: Exchange, faults: Faults, lifecycle: Lifecycle) -> None:
    """Expose faults and lifecycle as ``simulator/<name>`` JSON-RPC methods (keyword params)."""

    def fault(method: Callable[..., Any]) -> Callable[[Session, dict], Any]:
        return lambda caller, params: method(**params, _caller=caller)

    def plain(method: Callable[..., Any]) -> Callable[[Session, dict], Any]:
        return lambda caller, params: method(**params)

    def market_flag(paused: bool) -> Callable[[Session, dict], Any]:
        def flip(caller: Session, params: dict) -> str:
            market = lifecycle._source().market
            if paused:
                market.pause()
            else:
                market.resume()
            return "ok"

        return flip

    handlers = {
        name: fault(getattr(faults, name))
        for name in (
            "drop",
            "stall",
            "slow",
            "skip_change",
            "corrupt_book",
            "malformed",
            "error",
            "maintenance",
            "reject_channel",
            "clear",
        )
    }
    handlers |= {
        name: plain(getattr(lifecycle, name)) for name in ("expire_instrument", "roll_expiry", "create_expiry")
    }
    handlers["pause"] = market_flag(True)
    handlers["resume"] = market_flag(False)
    handlers["sessions"] = lambda caller, params: [
        dataclasses.asdict(info) for info in exchange.session_infos(faults._clock())
    ]
    exchange.control_handlers.update({name: _checked(handler) for name, handler in handlers.items()})


def _checked(handler: Callable[[Session, dict], Any]) -> Callable[[Session, dict], Any]:
    """Bad keyword parameters are -32602, not a crash of the connection."""

    def call(caller: Session, params: dict) -> Any:
        try:
            return handler(caller, params)
        except (TypeError, ValueError) as exc:
            raise RpcError(ErrorCode.INVALID_PARAMS, data={"reason": str(exc)}) from None

    return call
