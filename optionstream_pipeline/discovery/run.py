"""One discovery run: ask Deribit what is listed, choose the universe, record it.

Cost: two short-lived WebSocket requests (``public/get_instruments`` and
``public/get_index_price``), far inside Deribit's ``get_instruments`` limit of about one call per
10 s at the 10-minute default schedule.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from optionstream_pipeline.config import Settings
from optionstream_pipeline.deribit.public_api import fetch_instruments
from optionstream_pipeline.discovery.filters import Listing, parse_listing, select_instruments
from optionstream_pipeline.discovery.store import UniverseChange, UniverseStore
from optionstream_pipeline.discovery.underlying import underlying_price


@dataclass
class DiscoveryReport:
    """What a run saw and decided; the Dagster asset turns it into metadata."""

    change: UniverseChange
    listed: int
    unparsed: int
    underlying_price: float | None
    underlying_source: str
    dropped: Counter[str] = field(default_factory=Counter)
    missing_includes: list[str] = field(default_factory=list)
    strike_band_applied: bool = True
    duration_s: float = 0.0


async def fetch_listings(settings: Settings) -> tuple[list[Listing], int, float | None, str]:
    """(listings, objects that could not be parsed, underlying price, its source)."""
    deribit, timeout = settings.deribit, settings.discovery.fetch_timeout_s
    objects = await fetch_instruments(deribit.websocket_url, deribit.currency, timeout, deribit.tls_ca_file)
    parsed = [parse_listing(item) for item in objects]
    listings = [listing for listing in parsed if listing is not None]
    price, source = await underlying_price(
        deribit.websocket_url, deribit.currency, listings, timeout, deribit.tls_ca_file
    )
    return listings, len(parsed) - len(listings), price, source


def discover(settings: Settings, run_id: str | None = None, now: datetime | None = None) -> DiscoveryReport:
    """Fetch, filter and store; returns what changed. Raises if Deribit cannot be asked."""
    began = time.monotonic()
    listings, unparsed, price, source = asyncio.run(fetch_listings(settings))
    now = now or datetime.now(UTC)
    selection = select_instruments(listings, settings.discovery.filters, price, int(now.timestamp() * 1000))
    details = {"underlying_price": price, "underlying_source": source, "listed": len(listings)}
    change = UniverseStore(settings.discovery.universe_path).write(
        run_id or uuid.uuid4().hex, selection.selected, {item.name for item in listings}, now, details
    )
    return DiscoveryReport(
        change=change,
        listed=len(listings),
        unparsed=unparsed,
        underlying_price=price,
        underlying_source=source,
        dropped=selection.dropped,
        missing_includes=selection.missing_includes,
        strike_band_applied=selection.strike_band_applied,
        duration_s=time.monotonic() - began,
    )
