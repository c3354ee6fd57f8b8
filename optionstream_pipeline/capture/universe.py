"""Which instruments a capture follows, and the one way to build an engine for the configuration.

``deribit.instruments`` is an explicit list, captured as it is, or ``auto``: the discovery universe
whenever one exists (the Dagster deployment writes it; a running capture follows each new one within
seconds), and until then Deribit's whole live chain, so that capture never waits for discovery.
:func:`build_engine` is used by ``optionstream capture`` and the Dagster capture op alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from optionstream_pipeline.capture.engine import CaptureEngine
from optionstream_pipeline.config import Settings
from optionstream_pipeline.deribit.public_api import fetch_option_names
from optionstream_pipeline.discovery.source import UniverseFileSource

log = logging.getLogger(__name__)

UNIVERSE_REFRESH_S = 5.0  # how often the engine asks its source (a file stat while nothing changes)
LIVE_CHAIN_REFRESH_S = 600.0  # Deribit allows get_instruments about once per 10 s: minutes are plenty
LIVE_CHAIN_RETRY_S = 15.0  # after a failed or empty listing, doubling up to LIVE_CHAIN_REFRESH_S


class AutoUniverse:
    """The capture engine's ``instrument_source`` for ``instruments: auto``.

    Returns the discovery universe when its file exists, else the live chain, fetched at most every
    ``refresh_s`` (sooner again, with backoff, after a failed or empty listing). A failure raises, so
    the engine logs it and keeps what it follows.
    """

    def __init__(
        self,
        universe: UniverseFileSource,
        live_chain: Callable[[], list[str]],
        refresh_s: float = LIVE_CHAIN_REFRESH_S,
        retry_s: float = LIVE_CHAIN_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.universe = universe
        self._live_chain = live_chain
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._clock = clock
        self._chain: list[str] = []
        self._next_fetch = float("-inf")
        self._failures = 0
        self.following = ""  # "universe" or "live chain", for logs and status

    def __call__(self) -> list[str]:
        if self.universe.exists():
            self._announce("universe", f"following the discovery universe in {self.universe.path}")
            return self.universe()
        self._announce("live chain", f"no discovery universe in {self.universe.path}: following Deribit's live chain")
        now = self._clock()
        if now >= self._next_fetch:
            self._fetch(now)
        return list(self._chain)

    def _fetch(self, now: float) -> None:
        try:
            names = list(self._live_chain())
        except Exception:
            self._back_off(now)
            raise
        if not names:
            self._back_off(now)
            raise LookupError("Deribit lists no options of the configured currency")
        self._chain, self._failures = names, 0
        self._next_fetch = now + self._refresh_s

    def _back_off(self, now: float) -> None:
        delay = min(self._refresh_s, self._retry_s * 2**self._failures)
        self._failures += 1
        self._next_fetch = now + delay
        log.warning("live chain unavailable; asking Deribit again in %.0f s", delay)

    def _announce(self, following: str, message: str) -> None:
        if following != self.following:
            self.following = following
            log.info(message)


def auto_universe(settings: Settings) -> AutoUniverse:
    deribit = settings.deribit

    def live_chain() -> list[str]:
        return asyncio.run(
            fetch_option_names(deribit.websocket_url, deribit.currency, deribit.request_timeout_s, deribit.tls_ca_file)
        )

    return AutoUniverse(UniverseFileSource(settings.discovery.universe_path), live_chain)


def build_engine(settings: Settings) -> CaptureEngine:
    """The capture engine for these settings: the explicit list, or the ``auto`` universe."""
    if settings.deribit.instruments != "auto":
        return CaptureEngine(settings, settings.deribit.instruments)
    return CaptureEngine(settings, instrument_source=auto_universe(settings), source_refresh_s=UNIVERSE_REFRESH_S)


def describe(settings: Settings) -> str:
    """What a capture of these settings follows, in words."""
    if settings.deribit.instruments == "auto":
        return f"the discovery universe in {settings.discovery.universe_path} (else Deribit's live chain)"
    return f"{len(settings.deribit.instruments)} configured instruments"
