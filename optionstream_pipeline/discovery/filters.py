"""Choose the capture universe from the listed options.

Deribit's instrument objects gain and lose fields over the years, so :func:`parse_listing` reads
only what the filters need (name, expiry, strike, type) and falls back to the instrument name when a
field is missing; an object it cannot understand is skipped, never fatal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from optionstream_pipeline.config import DiscoveryFilters
from optionstream_pipeline.deribit.instruments import InstrumentNameError, parse_option_name

MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class Listing:
    """One listed option, reduced to what discovery needs."""

    name: str
    expiration_ms: int
    strike: float
    option_type: str  # "call" or "put"

    def days_to_expiry(self, now_ms: int) -> float:
        return (self.expiration_ms - now_ms) / MS_PER_DAY

    def as_dict(self) -> dict[str, Any]:
        return {
            "instrument_name": self.name,
            "expiration_ms": self.expiration_ms,
            "strike": self.strike,
            "option_type": self.option_type,
        }


def parse_listing(item: Mapping[str, Any]) -> Listing | None:
    """A :class:`Listing` from a ``get_instruments`` object, or ``None`` if it is not a usable option."""
    name = item.get("instrument_name")
    if not isinstance(name, str) or item.get("kind", "option") != "option":
        return None
    try:
        parsed = parse_option_name(name)
    except InstrumentNameError:
        return None
    expiration = item.get("expiration_timestamp")
    strike = item.get("strike")
    option_type = item.get("option_type")
    return Listing(
        name=name,
        expiration_ms=int(expiration) if isinstance(expiration, int | float) else parsed.expiration_timestamp_ms,
        strike=float(strike) if isinstance(strike, int | float) else parsed.strike,
        option_type=option_type if option_type in ("call", "put") else parsed.option_type,
    )


@dataclass
class Selection:
    """The chosen universe and why the rest was left out (reason -> count)."""

    selected: list[Listing]
    dropped: Counter[str] = field(default_factory=Counter)
    missing_includes: list[str] = field(default_factory=list)
    strike_band_applied: bool = True

    @property
    def names(self) -> list[str]:
        return [listing.name for listing in self.selected]


def select_instruments(
    listings: Iterable[Listing], rules: DiscoveryFilters, underlying: float | None, now_ms: int
) -> Selection:
    """Apply exclude, include, expiry window, strike band and the cap, in that order.

    Included names bypass the window and the band (someone asked for them by name) but still count
    towards the cap; when the cap bites, the nearest expiries and nearest-the-money strikes win,
    because that is where market makers quote and the books move.
    """
    listed = {listing.name: listing for listing in listings if listing.expiration_ms > now_ms}
    excluded, included = set(rules.exclude or ()), set(rules.include or ())
    dropped: Counter[str] = Counter()
    forced: list[Listing] = []
    candidates: list[Listing] = []
    band_applied = rules.strike_band is not None and bool(underlying)
    for listing in listed.values():
        if listing.name in excluded:
            dropped["excluded"] += 1
        elif listing.name in included:
            forced.append(listing)
        elif not rules.min_days_to_expiry <= listing.days_to_expiry(now_ms) <= rules.max_days_to_expiry:
            dropped["outside the expiry window"] += 1
        elif band_applied and not _in_band(listing.strike, underlying, rules.strike_band):
            dropped["outside the strike band"] += 1
        else:
            candidates.append(listing)
    ranked = sorted(forced, key=_rank_key(underlying)) + sorted(candidates, key=_rank_key(underlying))
    selected = ranked[: rules.max_instruments]
    if len(ranked) > len(selected):
        dropped["over max_instruments"] += len(ranked) - len(selected)
    missing = sorted(included - listed.keys())
    return Selection(sorted(selected, key=_rank_key(underlying)), dropped, missing, band_applied)


def _in_band(strike: float, underlying: float | None, band: float | None) -> bool:
    assert underlying and band is not None
    return abs(strike - underlying) <= band * underlying


def _rank_key(underlying: float | None):
    def key(listing: Listing) -> tuple[int, float, str]:
        distance = abs(listing.strike - underlying) if underlying else 0.0
        return listing.expiration_ms, distance, listing.name

    return key
