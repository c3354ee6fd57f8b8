"""The underlying price the strike band is centred on.

Deribit answers ``public/get_index_price`` (``index_name=btc_usd``). When it cannot (a simulator
without that method, a network error), discovery still runs: the underlying is estimated from the
listing itself, as the middle strike of the nearest expiry, because exchanges list short-dated
strikes around the money. The caller records which source was used.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Sequence

import orjson
from websockets.asyncio.client import connect

from optionstream_pipeline.capture.protocol import encode_request, error_from_reply
from optionstream_pipeline.discovery.filters import Listing

log = logging.getLogger(__name__)

INDEX_SOURCE = "index price (public/get_index_price)"
ESTIMATED_SOURCE = "estimated: middle strike of the nearest expiry"


async def fetch_index_price(url: str, index_name: str = "btc_usd", timeout_s: float = 10.0) -> float:
    """The current index price from Deribit; raises on an error reply or a timeout."""
    async with (
        asyncio.timeout(timeout_s),
        connect(url, compression=None, open_timeout=timeout_s, ping_interval=None) as ws,
    ):
        await ws.send(encode_request(1, "public/get_index_price", {"index_name": index_name}), text=True)
        while True:
            reply = orjson.loads(await ws.recv(decode=False))
            if reply.get("id") == 1:
                break
    if "error" in reply:
        raise error_from_reply(reply, "public/get_index_price")
    return float(reply["result"]["index_price"])


def estimate_from_strikes(listings: Sequence[Listing]) -> float | None:
    """The median strike of the nearest expiry, or ``None`` for an empty listing."""
    if not listings:
        return None
    nearest = min(listing.expiration_ms for listing in listings)
    return float(statistics.median(listing.strike for listing in listings if listing.expiration_ms == nearest))


async def underlying_price(
    url: str, currency: str, listings: Sequence[Listing], timeout_s: float
) -> tuple[float | None, str]:
    """(price, source): the index price if Deribit gives it, else the estimate from the strikes."""
    try:
        return await fetch_index_price(url, f"{currency.lower()}_usd", timeout_s), INDEX_SOURCE
    except Exception as exc:  # any failure falls back: the band is a convenience, not a requirement
        log.warning("index price unavailable (%s); estimating the underlying from the strikes", exc)
    return estimate_from_strikes(listings), ESTIMATED_SOURCE
