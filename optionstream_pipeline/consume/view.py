"""What people watch of a book: its top, how fast it updates, how old it is (pure; shared by the
terminal table of ``optionstream consume`` and the live web view)."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from datetime import date

from optionstream_pipeline.consume.books import OrderBook, PriceLevel
from optionstream_pipeline.deribit.instruments import InstrumentNameError, OptionName, parse_option_name

RATE_SMOOTHING = 0.5  # weight of the newest interval in the shown update rate


@dataclass(frozen=True, slots=True)
class TopOfBook:
    """One book's line: best levels, mid and spread, and how it is doing."""

    instrument: str
    expiry: date | None
    strike: float | None
    option_type: str | None
    bid: PriceLevel | None
    ask: PriceLevel | None
    mid: float | None
    spread: float | None
    change_id: int | None
    why: str | None  # None: reliable
    rate: float  # updates per second, lately
    age_s: float | None  # since capture received the book's last record

    @property
    def reliable(self) -> bool:
        return self.why is None


@functools.cache
def option_of(instrument: str) -> OptionName | None:
    """The option an instrument name names (``None``: not an option), parsed once per name."""
    try:
        return parse_option_name(instrument)
    except InstrumentNameError:
        return None


def top_of_book(book: OrderBook, rate: float, now_us: int) -> TopOfBook:
    option = option_of(book.instrument)
    expiry, strike, kind = (option.expiry, option.strike, option.option_type) if option else (None, None, None)
    bid, ask = book.best_bid(), book.best_ask()
    age = None if book.local_timestamp_us is None else max(0.0, (now_us - book.local_timestamp_us) / 1e6)
    return TopOfBook(
        book.instrument, expiry, strike, kind, bid, ask, book.mid(), book.spread(), book.change_id, book.why, rate, age
    )


def chain_order(line: TopOfBook) -> tuple:
    """Sorted as a chain is read: by expiry, then strike, calls before puts (other instruments last)."""
    return (line.expiry or date.max, line.strike or 0.0, line.option_type or "", line.instrument)


class Activity:
    """Update rates per instrument from counts between two looks: no clock read per update."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._looked: Counter[str] = Counter()
        self._looked_at_s: float | None = None
        self._rates: dict[str, float] = {}

    def count(self, instrument: str) -> None:
        self.counts[instrument] += 1

    def rates(self, now_s: float) -> dict[str, float]:
        """Updates per second of each instrument since the previous look, smoothed."""
        if self._looked_at_s is not None and now_s > self._looked_at_s:
            elapsed = now_s - self._looked_at_s
            for name, count in self.counts.items():
                latest = (count - self._looked[name]) / elapsed
                before = self._rates.get(name, latest)
                self._rates[name] = RATE_SMOOTHING * latest + (1 - RATE_SMOOTHING) * before
            self._looked = self.counts.copy()
        elif self._looked_at_s is None:
            self._looked = self.counts.copy()
        self._looked_at_s = now_s
        return self._rates
