"""The underlying price the strike band is centred on.

Deribit answers ``public/get_index_price`` (``index_name=btc_usd``). When it cannot (a simulator
without that method, a network error), discovery still runs: the underlying is estimated from the
listing itself, as the middle strike of the nearest expiry, because exchanges list short-dated
strikes around the money. The caller records which source was used.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence

from optionstream_pipeline.deribit.public_api import fetch_index_price
from optionstream_pipeline.deribit.tls import CertificateVerificationError
from optionstream_pipeline.discovery.filters import Listing

log = logging.getLogger(__name__)

INDEX_SOURCE = "index price (public/get_index_price)"
ESTIMATED_SOURCE = "estimated: middle strike of the nearest expiry"


def estimate_from_strikes(listings: Sequence[Listing]) -> float | None:
    """The median strike of the nearest expiry, or ``None`` for an empty listing."""
    if not listings:
        return None
    nearest = min(listing.expiration_ms for listing in listings)
    return float(statistics.median(listing.strike for listing in listings if listing.expiration_ms == nearest))


async def underlying_price(
    url: str, currency: str, listings: Sequence[Listing], timeout_s: float, ca_file: str | None = None
) -> tuple[float | None, str]:
    """(price, source): the index price if Deribit gives it, else the estimate from the strikes.

    ``ca_file`` is ``deribit.tls_ca_file``: the same TLS rules as every other connection to Deribit.
    """
    try:
        return await fetch_index_price(url, f"{currency.lower()}_usd", timeout_s, ca_file), INDEX_SOURCE
    except CertificateVerificationError:
        raise  # a TLS problem is an error to fix, not a reason to estimate
    except Exception as exc:  # any failure falls back: the band is a convenience, not a requirement
        log.warning("index price unavailable (%s); estimating the underlying from the strikes", exc)
    return estimate_from_strikes(listings), ESTIMATED_SOURCE
