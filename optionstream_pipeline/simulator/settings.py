"""Every knob of the simulator in one frozen dataclass, so a test states its whole setup in one line."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from optionstream_pipeline.simulator.credits import RateLimits
from optionstream_pipeline.simulator.market import MarketSettings
from optionstream_pipeline.simulator.universe import UniverseSettings

DERIBIT_VERSION = "1.2.26"
WS_PATH = "/ws/api/v2"


@dataclass(frozen=True)
class SimulatorSettings:
    """Simulator configuration.

    Market shortcuts (``seed``, ``max_instruments``, ``instruments``, ``events_per_second``,
    ``underlying``) build the :class:`MarketSettings` unless ``market`` is given explicitly.
    ``port=0`` picks a free port.  ``clock`` (Unix seconds) drives market time, expiries, heartbeats
    and rate limits; inject one to move time by hand.
    """

    host: str = "127.0.0.1"
    port: int = 0
    testnet: bool = False
    version: str = DERIBIT_VERSION
    seed: int = 1
    max_instruments: int | None = None
    instruments: tuple[str, ...] = ()
    events_per_second: float = 200.0
    underlying: float = 100_000.0
    market: MarketSettings | None = None
    client_id: str | None = None
    client_secret: str | None = None
    raw_requires_auth: bool = True
    min_heartbeat_interval_s: float = 10.0
    rate_limits: RateLimits = field(default_factory=RateLimits)
    tick_s: float = 0.01
    flush_interval_s: float = 0.1
    roll_interval_s: float = 1.0
    lifecycle_interval_s: float | None = None
    control_methods: bool = True
    max_outbox: int = 500_000
    replay_path: str | None = None
    replay_speed: float | None = 1.0
    load_instruments: int | None = None
    load_rate: float = 15_000.0
    clock: Callable[[], float] = time.time

    def market_settings(self) -> MarketSettings:
        if self.market is not None:
            return self.market
        universe = UniverseSettings(max_instruments=self.max_instruments, instruments=tuple(self.instruments))
        return MarketSettings(
            seed=self.seed,
            underlying=self.underlying,
            events_per_second=self.events_per_second,
            universe=universe,
        )
