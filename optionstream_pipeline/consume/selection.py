"""Which instruments a consumer follows: by name, expiry, strike and call/put (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from optionstream_pipeline.deribit.instruments import InstrumentNameError, OptionName, parse_option_name

KINDS = ("call", "put")


@dataclass(frozen=True)
class Selection:
    """Every criterion given must hold; none given selects everything. Names are checked up front,
    so that a typo is an error rather than a silent empty view."""

    instruments: frozenset[str] | None = None
    expiries: frozenset[date] | None = None
    strikes: frozenset[float] | None = None
    kinds: frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        instruments: Iterable[str] | None = None,
        expiries: Iterable[date | str] | None = None,
        strikes: Iterable[float | str] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> Selection:
        """Build from what a user typed: ``expiries`` as dates or ``27JUN25`` / ``2025-06-27``,
        ``kinds`` as ``call``/``put`` (or ``C``/``P``); raises ``ValueError`` naming a bad value."""
        for name in instruments or ():
            parse_option_name(name)
        return cls(
            frozenset(instruments) if instruments else None,
            frozenset(_expiry(e) for e in expiries) if expiries else None,
            frozenset(_strike(s) for s in strikes) if strikes else None,
            frozenset(_kind(k) for k in kinds) if kinds else None,
        )

    @property
    def everything(self) -> bool:
        return self.instruments is None and self.expiries is None and self.strikes is None and self.kinds is None

    def __call__(self, instrument: str) -> bool:
        if self.instruments is not None and instrument not in self.instruments:
            return False
        if self.expiries is None and self.strikes is None and self.kinds is None:
            return True
        try:
            option = parse_option_name(instrument)
        except InstrumentNameError:
            return False  # not an option: no expiry, strike or kind to match
        return self.matches(option)

    def matches(self, option: OptionName) -> bool:
        return (
            (self.expiries is None or option.expiry in self.expiries)
            and (self.strikes is None or option.strike in self.strikes)
            and (self.kinds is None or option.option_type in self.kinds)
        )


def _expiry(value: date | str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:  # Deribit's own spelling, as in the instrument names
        return parse_option_name(f"BTC-{value.upper()}-1-C").expiry
    except InstrumentNameError:
        raise ValueError(f"{value!r} is not an expiry: expected YYYY-MM-DD or Deribit's DMMMYY, e.g. 27JUN25") from None


def _strike(value: float | str) -> float:
    try:
        strike = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a strike: expected a number, e.g. 100000") from None
    if strike <= 0:
        raise ValueError(f"{value!r} is not a strike: it must be positive")
    return strike


def _kind(value: str) -> str:
    kind = {"c": "call", "p": "put", "call": "call", "put": "put"}.get(value.lower())
    if kind is None:
        raise ValueError(f"{value!r} is not an option type: expected call or put")
    return kind
