"""The simulated market: one order book per listed option, driven by a seeded random process.

Pure, deterministic code (no I/O, no clock reads: every method takes ``now_s``), so the book process,
the ``100ms`` net diffs and the shared ``change_id`` counter are unit-tested without sockets.  The
server calls :meth:`Market.advance` (book events -> ``raw`` messages) and :meth:`Market.flush`
(every 100 ms: net diffs -> ``100ms`` messages); tests read the ground truth from any thread through
:meth:`Market.book` / :meth:`Market.book_at`, which take the market lock and return copies.

Prices sit on the BTC option tick grid around a Black-Scholes mark of an inverse option whose
underlying follows a random walk; amounts are contracts with one decimal.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import date

from optionstream_pipeline.deribit.books import apply_levels
from optionstream_pipeline.deribit.instruments import tick_size_at
from optionstream_pipeline.simulator.universe import Instrument, InstrumentEvent, Universe, UniverseSettings

INTERVALS = ("100ms", "raw")
YEAR_S = 365.0 * 86400.0
MIN_PRICE = 0.0001
MAX_LEVELS = 12

# One published book message: (instrument name, interval, the ``data`` object of the notification).
BookUpdate = tuple[str, str, dict]


@dataclass(frozen=True, slots=True)
class BookState:
    """A book as a client should see it after the message with ``change_id`` (treat as read-only)."""

    change_id: int
    timestamp_ms: int
    bids: dict[float, float]
    asks: dict[float, float]

    @property
    def best_bid(self) -> tuple[float, float] | None:
        return max(self.bids.items()) if self.bids else None

    @property
    def best_ask(self) -> tuple[float, float] | None:
        return min(self.asks.items()) if self.asks else None

    def copy(self) -> BookState:
        return BookState(self.change_id, self.timestamp_ms, dict(self.bids), dict(self.asks))


@dataclass(frozen=True, slots=True)
class MarketSettings:
    """The random process.  ``events_per_second`` counts book events over all instruments together
    (real BTC option books mostly change well under once a second each)."""

    seed: int = 1
    underlying: float = 100_000.0
    events_per_second: float = 200.0
    underlying_vol: float = 0.6
    history_size: int | None = None  # states kept per book and interval; None: ~100k states in total
    empty_book_probability: float = 0.03
    first_change_id: int = 33_195_890_000
    universe: UniverseSettings = field(default_factory=UniverseSettings)


# ----------------------------------------------------------------------------------------------
# Pure helpers: tick grid, level diffs, Black-Scholes for inverse options.


def floor_to_tick(price: float) -> float:
    """Highest grid price at or below ``price`` (0.0001 grid, 0.0005 above 0.005)."""
    tick = tick_size_at(price)
    return round(math.floor(price / tick + 1e-9) * tick, 4)


def ceil_to_tick(price: float) -> float:
    """Lowest grid price at or above ``price``."""
    tick = tick_size_at(price)
    return round(math.ceil(price / tick - 1e-9) * tick, 4)


def diff_side(old: dict[float, float], new: dict[float, float], descending: bool) -> list[list]:
    """Deribit level actions turning ``old`` into ``new``: ``new``/``change``/``delete`` (amount 0.0)."""
    actions: list[list] = []
    for price in sorted(old.keys() | new.keys(), reverse=descending):
        before, after = old.get(price), new.get(price)
        if before is None:
            actions.append(["new", price, after])
        elif after is None:
            actions.append(["delete", price, 0.0])
        elif before != after:
            actions.append(["change", price, after])
    return actions


def apply_book_message(state: BookState | None, data: dict) -> BookState:
    """The book after one ``book.*`` message's ``data`` (a snapshot replaces, a change applies)."""
    snapshot = data.get("type") == "snapshot" or "prev_change_id" not in data
    bids = {} if snapshot or state is None else dict(state.bids)
    asks = {} if snapshot or state is None else dict(state.asks)
    apply_levels(bids, data["bids"])
    apply_levels(asks, data["asks"])
    return BookState(data["change_id"], data["timestamp"], bids, asks)


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def black_scholes(spot: float, strike: float, years: float, vol: float, call: bool) -> dict[str, float]:
    """USD price and greeks (vega per vol point, theta per day, rho per 1%) of a European option."""
    years = max(years, 1e-7)
    root = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + 0.5 * vol * vol * years) / root
    d2 = d1 - root
    if call:
        price, delta = spot * _norm_cdf(d1) - strike * _norm_cdf(d2), _norm_cdf(d1)
        rho = strike * years * _norm_cdf(d2) / 100
    else:
        price, delta = strike * _norm_cdf(-d2) - spot * _norm_cdf(-d1), _norm_cdf(d1) - 1.0
        rho = -strike * years * _norm_cdf(-d2) / 100
    return {
        "price": max(price, 0.0),
        "delta": delta,
        "gamma": _norm_pdf(d1) / (spot * root),
        "vega": spot * _norm_pdf(d1) * math.sqrt(years) / 100,
        "theta": -spot * _norm_pdf(d1) * vol / (2 * math.sqrt(years)) / 365,
        "rho": rho,
    }


def implied_vol(price_btc: float, spot: float, strike: float, years: float, call: bool) -> float:
    """Vol in percent reproducing a BTC price (bisection); 0.0 when no vol can (as Deribit shows)."""
    target = price_btc * spot
    low, high = 0.01, 6.0
    if (
        not black_scholes(spot, strike, years, low, call)["price"]
        <= target
        <= black_scholes(spot, strike, years, high, call)["price"]
    ):
        return 0.0
    for _ in range(40):
        mid = 0.5 * (low + high)
        if black_scholes(spot, strike, years, mid, call)["price"] < target:
            low = mid
        else:
            high = mid
    return round(50.0 * (low + high), 2)


def smile_vol(spot: float, strike: float, years: float) -> float:
    """A plausible smile: 55% at the money, rising into the wings, steeper for short tenors."""
    moneyness = abs(math.log(strike / spot)) / math.sqrt(max(years, 1e-4))
    return 0.55 + 0.12 * min(moneyness, 6.0) + 0.02 * moneyness * moneyness / (1 + moneyness)


# ----------------------------------------------------------------------------------------------


class _Book:
    """Mutable state of one instrument's book: the live (``raw``) levels and the last ``100ms`` ones."""

    __slots__ = ("asks", "bids", "change_id", "history", "open_interest", "published", "timestamp_ms")

    def __init__(self, change_id: int, timestamp_ms: int, history_size: int) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.change_id = change_id
        self.timestamp_ms = timestamp_ms
        self.published = BookState(change_id, timestamp_ms, {}, {})
        self.history: dict[str, deque[BookState]] = {i: deque(maxlen=history_size) for i in INTERVALS}
        self.open_interest = 0.0

    def raw_state(self) -> BookState:
        return BookState(self.change_id, self.timestamp_ms, dict(self.bids), dict(self.asks))


class Market:
    """Books, the underlying, the universe and the shared ``change_id`` counter.

    Thread-safety: every public method takes one re-entrant lock; readers get copies.
    """

    def __init__(self, settings: MarketSettings | None = None, now_s: float = 0.0) -> None:
        self.settings = settings or MarketSettings()
        self._lock = threading.RLock()
        self._rng = random.Random(self.settings.seed)
        self._change_id = self.settings.first_change_id
        self._now_s = now_s
        self._event_debt = 0.0
        self._paused = False
        self.underlying = self.settings.underlying
        self.universe = Universe(self.settings.universe)
        self._books: dict[str, _Book] = {}
        self._gone: dict[str, _Book] = {}
        self._names: list[str] = []
        self._dirty: dict[str, None] = {}
        events = self.universe.populate(now_s, self.underlying)
        self._history_size = self.settings.history_size or min(1024, max(32, 50_000 // max(1, len(events))))
        self._apply_events(events)

    # -- reading the ground truth --------------------------------------------------------------

    def instruments(self) -> list[str]:
        """Names of the live instruments (listing order)."""
        with self._lock:
            return list(self._books)

    def instrument(self, name: str) -> Instrument | None:
        with self._lock:
            return self.universe.live.get(name) or self.universe.expired.get(name)

    def instruments_json(self, expired: bool = False) -> list[dict]:
        with self._lock:
            return self.universe.instruments_json(expired)

    def is_live(self, name: str) -> bool:
        with self._lock:
            return name in self._books

    @property
    def change_id(self) -> int:
        """The shared counter's last value (the newest ``change_id`` of any book)."""
        with self._lock:
            return self._change_id

    def book(self, instrument: str, interval: str = "100ms") -> BookState:
        """The book as published on ``book.{instrument}.{interval}`` (``raw``: after every event)."""
        with self._lock:
            book = self._books.get(instrument) or self._gone[instrument]
            return (book.raw_state() if interval == "raw" else book.published).copy()

    def book_at(self, instrument: str, interval: str, change_id: int) -> BookState | None:
        """The published book in effect at ``change_id``; None if older than the kept history."""
        with self._lock:
            book = self._books.get(instrument) or self._gone.get(instrument)
            if book is None:
                return None
            history = book.history[interval]
            ids = [state.change_id for state in history]
            index = bisect.bisect_right(ids, change_id) - 1
            return history[index].copy() if index >= 0 else None

    def mark_price(self, instrument: str) -> float:
        with self._lock:
            return self._pricing(self.universe.live[instrument])["price"] / self.underlying

    # -- pausing ------------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop book events and the underlying; the next :meth:`flush` still publishes what is pending."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def is_settled(self) -> bool:
        """Paused and nothing left for the ``100ms`` flush: published books are final."""
        with self._lock:
            return self._paused and not self._dirty

    # -- driving the process ------------------------------------------------------------------

    def advance(self, now_s: float, generate: bool = True) -> list[BookUpdate]:
        """Move time to ``now_s``: random-walk the underlying and generate due book events.

        Returns one ``raw`` update per event.  ``generate=False`` (maintenance) freezes everything.
        """
        with self._lock:
            dt = max(0.0, now_s - self._now_s)
            self._now_s = now_s
            if self._paused or not generate or not self._names:
                return []
            self._walk_underlying(dt)
            rate = self.settings.events_per_second
            self._event_debt = min(self._event_debt + rate * dt, max(rate, 1.0))
            updates: list[BookUpdate] = []
            while self._event_debt >= 1.0:
                self._event_debt -= 1.0
                update = self.random_event(self._rng.choice(self._names), now_s)
                if update is not None:
                    updates.append(update)
            return updates

    def random_event(self, instrument: str, now_s: float) -> BookUpdate | None:
        """One book event on ``instrument`` touching one to three levels; None if nothing changed."""
        with self._lock:
            book = self._books[instrument]
            old_bids, old_asks = dict(book.bids), dict(book.asks)
            mark = self._pricing(self.universe.live[instrument])["price"] / self.underlying
            for _ in range(5):
                for _ in range(self._rng.choice((1, 1, 1, 2, 2, 3))):
                    self._mutate(book, mark)
                bids = diff_side(old_bids, book.bids, descending=True)
                asks = diff_side(old_asks, book.asks, descending=False)
                if bids or asks:
                    return self._record_event(instrument, book, now_s, bids, asks)
            return None

    def _record_event(self, name: str, book: _Book, now_s: float, bids: list, asks: list) -> BookUpdate:
        prev = book.change_id
        book.change_id = self._next_change_id()
        book.timestamp_ms = int(now_s * 1000)
        book.history["raw"].append(book.raw_state())
        self._dirty[name] = None
        data = {
            "type": "change",
            "timestamp": book.timestamp_ms,
            "prev_change_id": prev,
            "instrument_name": name,
            "change_id": book.change_id,
            "bids": bids,
            "asks": asks,
        }
        return name, "raw", data

    def flush(self, now_s: float) -> list[BookUpdate]:
        """The ``100ms`` publication: for every book changed since the last one, its NET diff."""
        with self._lock:
            updates: list[BookUpdate] = []
            for name in self._dirty:
                book = self._books.get(name)
                if book is None:
                    continue
                last = book.published
                bids = diff_side(last.bids, book.bids, descending=True)
                asks = diff_side(last.asks, book.asks, descending=False)
                if not bids and not asks:
                    continue
                book.published = book.raw_state()
                book.history["100ms"].append(book.published)
                data = {
                    "type": "change",
                    "timestamp": book.timestamp_ms,
                    "prev_change_id": last.change_id,
                    "instrument_name": name,
                    "change_id": book.change_id,
                    "bids": bids,
                    "asks": asks,
                }
                updates.append((name, "100ms", data))
            self._dirty.clear()
            return updates

    def snapshot(self, instrument: str, interval: str) -> dict | None:
        """The ``data`` of a subscription's first message: the published book, all levels ``new``."""
        with self._lock:
            book = self._books.get(instrument)
            if book is None:
                return None
            state = book.raw_state() if interval == "raw" else book.published
            return {
                "type": "snapshot",
                "timestamp": state.timestamp_ms,
                "instrument_name": instrument,
                "change_id": state.change_id,
                "bids": [["new", p, a] for p, a in sorted(state.bids.items(), reverse=True)],
                "asks": [["new", p, a] for p, a in sorted(state.asks.items())],
            }

    # -- the random process -------------------------------------------------------------------

    def _next_change_id(self) -> int:
        """The shared counter jumps by a random step: ids rise but are not consecutive per book."""
        self._change_id += self._rng.randint(1, 40)
        return self._change_id

    def _walk_underlying(self, dt: float) -> None:
        if dt > 0:
            sigma = self.settings.underlying_vol * math.sqrt(dt / YEAR_S)
            self.underlying *= math.exp(self._rng.gauss(0.0, sigma))

    def _years(self, instrument: Instrument) -> float:
        return max(1e-7, (instrument.expiration_timestamp_ms / 1000 - self._now_s) / YEAR_S)

    def _pricing(self, instrument: Instrument) -> dict[str, float]:
        years = self._years(instrument)
        vol = smile_vol(self.underlying, instrument.strike, years)
        result = black_scholes(self.underlying, instrument.strike, years, vol, instrument.option_type == "call")
        result["vol"] = vol
        return result

    def _amount(self) -> float:
        return round(min(max(0.1, self._rng.lognormvariate(1.5, 1.2)), 5000.0), 1)

    def _mutate(self, book: _Book, mark: float) -> None:
        """One level action on a random side: add a level, change an amount, or delete a level."""
        side = "bids" if self._rng.random() < 0.5 else "asks"
        levels = book.bids if side == "bids" else book.asks
        roll = self._rng.random()
        if not levels or (roll < 0.35 and len(levels) < MAX_LEVELS):
            self._add_level(book, side, mark)
        elif roll < 0.75 or len(levels) <= 1:
            price = self._rng.choice(list(levels))
            amount = round(max(0.1, levels[price] * self._rng.uniform(0.3, 2.0)), 1)
            levels[price] = amount if amount != levels[price] else round(amount + 0.1, 1)
        else:
            del levels[self._doomed_level(levels, side, mark)]

    def _doomed_level(self, levels: dict[float, float], side: str, mark: float) -> float:
        """Half the time the level most on the wrong side of the mark (stale quotes get pulled)."""
        if self._rng.random() < 0.5:
            worst = max(levels) if side == "bids" else min(levels)
            if (worst > mark) if side == "bids" else (worst < mark):
                return worst
        return self._rng.choice(list(levels))

    def _add_level(self, book: _Book, side: str, mark: float) -> None:
        """A new level away from the mark; never crosses the other side, never below one tick."""
        half_spread = max(tick_size_at(mark), mark * 0.03)
        depth = self._rng.expovariate(1.0 / max(mark * 0.08, 0.0003))
        if side == "bids":
            price = floor_to_tick(mark - half_spread - depth)
            if price < MIN_PRICE or price in book.bids or (book.asks and price >= min(book.asks)):
                return
            book.bids[price] = self._amount()
        else:
            price = ceil_to_tick(max(mark + half_spread + depth, MIN_PRICE))
            if price in book.asks or (book.bids and price <= max(book.bids)):
                return
            book.asks[price] = self._amount()

    def _new_book(self, instrument: Instrument) -> _Book:
        book = _Book(self._next_change_id(), int(self._now_s * 1000), self._history_size)
        mark = self._pricing(instrument)["price"] / self.underlying
        book.open_interest = round(self._rng.uniform(0, 800), 1)
        if not (mark < 0.0005 and self._rng.random() < self.settings.empty_book_probability * 10) and not (
            self._rng.random() < self.settings.empty_book_probability
        ):
            for _ in range(self._rng.randint(2, 16)):
                self._add_level(book, "bids" if self._rng.random() < 0.5 else "asks", mark)
        book.published = book.raw_state()
        for interval in INTERVALS:
            book.history[interval].append(book.published)
        return book

    # -- the instrument lifecycle -------------------------------------------------------------

    def _apply_events(self, events: list[InstrumentEvent]) -> list[InstrumentEvent]:
        for event in events:
            name = event.instrument_name
            if event.state == "created" and name not in self._books:
                self._books[name] = self._new_book(self.universe.live[name])
            elif event.state == "closed" and name in self._books:
                self._gone[name] = self._books.pop(name)
                self._dirty.pop(name, None)
        self._names = list(self._books)
        return events

    def roll(self, now_s: float) -> list[InstrumentEvent]:
        """Expire instruments whose time has come, list new expiries (``instrument.state`` events)."""
        with self._lock:
            self._now_s = max(self._now_s, now_s)
            return self._apply_events(self.universe.roll(now_s, self.underlying))

    def expire_instrument(self, name: str, now_s: float) -> list[InstrumentEvent]:
        with self._lock:
            return self._apply_events(self.universe.expire(name, now_s))

    def roll_nearest_expiry(self, now_s: float) -> list[InstrumentEvent]:
        with self._lock:
            return self._apply_events(self.universe.roll_nearest_expiry(now_s))

    def create_expiry(self, now_s: float, expiry: date | None = None) -> list[InstrumentEvent]:
        with self._lock:
            return self._apply_events(self.universe.create_expiry(now_s, self.underlying, expiry))

    # -- the ticker ---------------------------------------------------------------------------

    def ticker(self, instrument: str, interval: str = "100ms") -> dict | None:
        """``ticker.{instrument}.{interval}`` data: best bid/ask are the top of that interval's book."""
        with self._lock:
            spec, book = self.universe.live.get(instrument), self._books.get(instrument)
            if spec is None or book is None:
                return None
            state = book.raw_state() if interval == "raw" else book.published
            return self._ticker_data(spec, book, state)

    def _ticker_data(self, spec: Instrument, book: _Book, state: BookState) -> dict:
        spot, years, call = self.underlying, self._years(spec), spec.option_type == "call"
        pricing = self._pricing(spec)
        mark = pricing["price"] / spot
        bid, ask = state.best_bid, state.best_ask
        future = spec.settlement_period == "month"
        index_name = f"BTC-{spec.name.split('-')[1]}" if future else f"SYN.BTC-{spec.name.split('-')[1]}"
        return {
            "underlying_price": round(spot * math.exp(0.05 * years), 2),
            "underlying_index": index_name,
            "timestamp": int(self._now_s * 1000),
            "stats": {"volume": None, "price_change": None, "low": None, "high": None},
            "state": "open",
            "settlement_price": round(mark, 8),
            "open_interest": book.open_interest,
            "min_price": MIN_PRICE,
            "max_price": round(max(mark * 2, 0.01) + 0.05, 4),
            "mark_price": round(mark, 8),
            "mark_iv": round(pricing["vol"] * 100, 2),
            "last_price": None,
            "interest_rate": 0.0,
            "instrument_name": spec.name,
            "index_price": round(spot, 2),
            "greeks": {key: round(pricing[key], 5) for key in ("vega", "theta", "rho", "gamma", "delta")},
            "estimated_delivery_price": round(spot, 2),
            "bid_iv": implied_vol(bid[0], spot, spec.strike, years, call) if bid else 0.0,
            "best_bid_price": bid[0] if bid else 0.0,
            "best_bid_amount": bid[1] if bid else 0.0,
            "best_ask_price": ask[0] if ask else 0.0,
            "best_ask_amount": ask[1] if ask else 0.0,
            "ask_iv": implied_vol(ask[0], spot, spec.strike, years, call) if ask else 0.0,
        }
