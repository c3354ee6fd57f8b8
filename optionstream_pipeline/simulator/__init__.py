"""A Deribit-compatible WebSocket simulator: the offline demo's data source and the tests' fault injector.

Synchronous tests (the server runs on its own loop in a background thread)::

    from optionstream_pipeline.simulator import SimulatorSettings, SimulatorThread

    with SimulatorThread(SimulatorSettings(max_instruments=20, seed=7)) as sim:
        sim.url                                   # ws://127.0.0.1:<free port>/ws/api/v2
        sim.market.instruments()                  # live names
        sim.subscribers_of("book.X.100ms")        # -> [SessionInfo], to wait for a client's subscribe
        sim.sessions()                            # SessionInfo(id, channels, authed, heartbeat_interval, ...)
        sim.market.book("X", "100ms")             # BookState(change_id, timestamp_ms, bids, asks) as published
        sim.market.book_at("X", "raw", change_id) # state in effect at change_id (bounded history) or None
        sim.market.pause(); sim.market.is_settled(); sim.market.resume()
        sim.faults.drop(session=None)             # every fault: session id or None = all client sessions
        sim.lifecycle.expire_instrument("X"); sim.lifecycle.roll_expiry(); sim.lifecycle.create_expiry()

asyncio users: ``async with DeribitSimulator(settings) as sim:`` (or ``await sim.start()`` /
``await sim.stop()``) with the same attributes.  All :class:`Market` reads and all ``faults`` /
``lifecycle`` methods are thread-safe.

Wire behaviour (JSON-RPC 2.0 text frames, every reply with ``usIn``/``usOut``/``usDiff``/``testnet``):
``public/hello``, ``public/test``, ``public/get_time``, ``public/set_heartbeat`` (interval below
``min_heartbeat_interval_s``, default 10: -32602), ``public/disable_heartbeat``, ``public/subscribe``,
``public/unsubscribe``, ``public/unsubscribe_all``, ``public/get_instruments``, ``public/auth``
(``client_credentials`` against ``client_id``/``client_secret``, or ``refresh_token``).  Channels:
``book.{name}.{100ms|raw}`` (raw needs auth: 13778), ``ticker.{name}.{100ms|raw}``,
``platform_state``, ``instrument.state.option.BTC``; anything else is silently left out of the
subscribe result.  Frames over 32 KiB: -32600; unparseable: -32700 (no id); unknown method: -32601;
out of credits: 10028.  Heartbeat: every interval a ``heartbeat`` and a ``test_request``; a session
that has not called ``public/test`` by the next interval is closed (close frame 1000).

Faults (:class:`Faults`, also ``simulator/<name>`` JSON-RPC methods and ``optionstream simulate-control``):

- ``drop``: abort the TCP connection, no close frame.
- ``stall(seconds=None, drop_frames=False)``: send nothing (no close) until the time passes or
  ``clear``; frames queue up and arrive late (or are discarded with ``drop_frames``).
- ``slow(delay_s)``: sleep ``delay_s`` before every outgoing frame.
- ``skip_change(instrument, interval=None)``: swallow that book channel's next message: a gap.
- ``malformed``: one text frame that is not JSON.  ``error(code=10028)``: an error frame without id.
- ``maintenance(seconds, close_connections=True)``: ``platform_state`` locked true, 11051 to every
  request, no data, client sessions closed with 1012 (real Deribit drops connections too); at the
  end ``locked`` false and data resumes.  ``close_connections=False`` keeps sessions open.
- ``reject_channel(pattern)``: fnmatch pattern left out of subscribe results from now on.
- ``clear()``: undo the above (``session=None``: also global rejections and maintenance).

A client that lets ``max_outbox`` frames (default 500,000) pile up unsent is aborted, like a slow
consumer on Deribit.  ``ticker.*.100ms`` is published with the 100 ms flush of a changed book;
``ticker.*.raw`` with every book event.  Not simulated: ``agg2`` and grouped book channels, trades,
``markprice.*``, ``announcements``, private methods.

Modes: the random market (default), ``replay_path`` (a recorded ``.ws.log`` played byte-identically),
``load_instruments``/``load_rate`` (pre-encoded frames for benchmarks).
"""

from optionstream_pipeline.simulator.credits import RateLimits, SessionCredits, TokenBucket
from optionstream_pipeline.simulator.exchange import Exchange, RpcError, Session, SessionInfo
from optionstream_pipeline.simulator.faults import Faults, Lifecycle
from optionstream_pipeline.simulator.load import LoadSource
from optionstream_pipeline.simulator.market import (
    BookState,
    Market,
    MarketSettings,
    apply_book_message,
    diff_side,
)
from optionstream_pipeline.simulator.replay import Recording, ReplaySource, parse_ws_log
from optionstream_pipeline.simulator.server import DeribitSimulator, SimulatorThread
from optionstream_pipeline.simulator.settings import WS_PATH, SimulatorSettings
from optionstream_pipeline.simulator.universe import (
    Instrument,
    InstrumentEvent,
    Universe,
    UniverseSettings,
    expiry_schedule,
)

__all__ = [
    "WS_PATH",
    "BookState",
    "DeribitSimulator",
    "Exchange",
    "Faults",
    "Instrument",
    "InstrumentEvent",
    "Lifecycle",
    "LoadSource",
    "Market",
    "MarketSettings",
    "RateLimits",
    "Recording",
    "ReplaySource",
    "RpcError",
    "Session",
    "SessionCredits",
    "SessionInfo",
    "SimulatorSettings",
    "SimulatorThread",
    "TokenBucket",
    "Universe",
    "UniverseSettings",
    "apply_book_message",
    "diff_side",
    "expiry_schedule",
    "parse_ws_log",
]
