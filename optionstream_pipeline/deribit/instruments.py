"""Deribit option instrument names (``BTC-9MAY25-70000-C``) and the price tick grid."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

# Day without a leading zero, three-letter month, two-digit year; strikes can carry a "d"
# decimal separator on some currencies (e.g. "XRP_USDC-...-0d625-C"), never on BTC so far.
_OPTION_NAME = re.compile(
    r"^(?P<currency>[A-Z]{2,10}(?:_[A-Z]{2,10})?)-(?P<day>[1-9]\d?)(?P<month>[A-Z]{3})(?P<year>\d{2})"
    r"-(?P<strike>\d+(?:d\d+)?)-(?P<kind>[CP])$"
)

# Deribit expiries settle at 08:00 UTC.
EXPIRY_HOUR_UTC = 8


class InstrumentNameError(ValueError):
    """An instrument name that is not a Deribit option name."""


@dataclass(frozen=True, slots=True)
class OptionName:
    """The parts of a Deribit option name."""

    currency: str
    expiry: date
    strike: float
    option_type: str  # "call" or "put"

    @property
    def name(self) -> str:
        return format_option_name(self.currency, self.expiry, self.strike, self.option_type)

    @property
    def expiration_timestamp_ms(self) -> int:
        moment = datetime(self.expiry.year, self.expiry.month, self.expiry.day, EXPIRY_HOUR_UTC, tzinfo=UTC)
        return int(moment.timestamp() * 1000)


def parse_option_name(name: str) -> OptionName:
    """Parse ``BTC-9MAY25-70000-C``; raise :class:`InstrumentNameError` naming what is wrong."""
    match = _OPTION_NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise InstrumentNameError(
            f"{name!r} is not a Deribit option name: expected CURRENCY-DMMMYY-STRIKE-C|P, e.g. 'BTC-27JUN25-100000-C'"
        )
    month = match["month"]
    if month not in MONTHS:
        raise InstrumentNameError(f"{name!r} has an unknown month {month!r}: expected one of {', '.join(MONTHS)}")
    try:
        expiry = date(2000 + int(match["year"]), MONTHS.index(month) + 1, int(match["day"]))
    except ValueError as exc:
        raise InstrumentNameError(f"{name!r} has an impossible expiry date: {exc}") from None
    strike = float(match["strike"].replace("d", "."))
    return OptionName(match["currency"], expiry, strike, "call" if match["kind"] == "C" else "put")


def format_expiry(expiry: date) -> str:
    """``date(2025, 5, 9)`` -> ``9MAY25`` (Deribit writes the day without a leading zero)."""
    return f"{expiry.day}{MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"


def format_option_name(currency: str, expiry: date, strike: float, option_type: str) -> str:
    strike_text = str(int(strike)) if float(strike).is_integer() else str(strike).replace(".", "d")
    return f"{currency}-{format_expiry(expiry)}-{strike_text}-{'C' if option_type == 'call' else 'P'}"


# The BTC option tick grid: 0.0001 BTC, and 0.0005 above 0.005 (``tick_size_steps``).
BTC_OPTION_TICK_SIZE = 0.0001
BTC_OPTION_TICK_SIZE_STEPS = ({"above_price": 0.005, "tick_size": 0.0005},)


def tick_size_at(price: float, tick_size: float = BTC_OPTION_TICK_SIZE, steps=BTC_OPTION_TICK_SIZE_STEPS) -> float:
    """The tick that applies at ``price`` under Deribit's ``tick_size_steps`` rule."""
    tick = tick_size
    for step in steps:
        if price > step["above_price"]:
            tick = step["tick_size"]
    return tick


def round_to_tick(price: float, tick_size: float = BTC_OPTION_TICK_SIZE, steps=BTC_OPTION_TICK_SIZE_STEPS) -> float:
    """Round ``price`` to the nearest valid price on the grid (never below one tick)."""
    tick = tick_size_at(price, tick_size, steps)
    ticks = max(1, round(price / tick))
    return round(ticks * tick, 10)


def is_on_tick_grid(price: float, tick_size: float = BTC_OPTION_TICK_SIZE, steps=BTC_OPTION_TICK_SIZE_STEPS) -> bool:
    tick = tick_size_at(price, tick_size, steps)
    return abs(price / tick - round(price / tick)) < 1e-6
