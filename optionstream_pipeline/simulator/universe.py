"""The BTC option universe: which expiries and strikes are listed at a given moment, and how it rolls.

Pure code driven by an injected time (``now`` in Unix seconds): no clock is read here, so tests can
walk the universe through expiries by passing times.  The shape follows the real 2024/2025 chains in
``/work/shared/fixtures/deribit``: dailies for the next three days, weekly Fridays, monthly last
Fridays and quarterly (Mar/Jun/Sep/Dec) last Fridays, all at 08:00 UTC; strikes are denser for short
tenors and coarser for long ones; 700 to 1,100 instruments at full size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from optionstream_pipeline.deribit.instruments import (
    BTC_OPTION_TICK_SIZE,
    BTC_OPTION_TICK_SIZE_STEPS,
    EXPIRY_HOUR_UTC,
    format_option_name,
    parse_option_name,
)

FRIDAY = 4
QUARTER_MONTHS = (3, 6, 9, 12)
NICE_STRIKE_STEPS = (50, 100, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 25000, 50000)
FIRST_INSTRUMENT_ID = 400_000


def expiry_timestamp_ms(expiry: date) -> int:
    """Expiration moment of a Deribit option expiry (08:00 UTC) in epoch milliseconds."""
    moment = datetime(expiry.year, expiry.month, expiry.day, EXPIRY_HOUR_UTC, tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def last_friday(year: int, month: int) -> date:
    """Last Friday of a month: Deribit's monthly and quarterly expiry day."""
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    day = nxt - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - FRIDAY) % 7)


def settlement_period(expiry: date) -> str:
    """``day``/``week``/``month`` as the 2025 fixture labels them (quarterlies are ``month`` too)."""
    if expiry == last_friday(expiry.year, expiry.month):
        return "month"
    return "week" if expiry.weekday() == FRIDAY else "day"


@dataclass(frozen=True, slots=True)
class Instrument:
    """One listed option, rendered by :meth:`to_json` exactly like a ``get_instruments`` object."""

    name: str
    expiry: date
    strike: float
    option_type: str
    instrument_id: int
    creation_timestamp_ms: int
    settlement_period: str
    currency: str = "BTC"

    @property
    def expiration_timestamp_ms(self) -> int:
        return expiry_timestamp_ms(self.expiry)

    def to_json(self, is_active: bool = True) -> dict:
        return {
            "base_currency": self.currency,
            "block_trade_commission": 0.0003,
            "block_trade_min_trade_amount": 25,
            "block_trade_tick_size": 0.0001,
            "contract_size": 1.0,
            "counter_currency": "USD",
            "creation_timestamp": self.creation_timestamp_ms,
            "expiration_timestamp": self.expiration_timestamp_ms,
            "instrument_id": self.instrument_id,
            "instrument_name": self.name,
            "instrument_type": "reversed",
            "is_active": is_active,
            "kind": "option",
            "maker_commission": 0.0003,
            "min_trade_amount": 0.1,
            "option_type": self.option_type,
            "price_index": f"{self.currency.lower()}_usd",
            "quote_currency": self.currency,
            "rfq": False,
            "settlement_currency": self.currency,
            "settlement_period": self.settlement_period,
            "strike": float(self.strike),
            "taker_commission": 0.0003,
            "tick_size": BTC_OPTION_TICK_SIZE,
            "tick_size_steps": [dict(step) for step in BTC_OPTION_TICK_SIZE_STEPS],
        }


@dataclass(frozen=True, slots=True)
class InstrumentEvent:
    """An ``instrument.state.option.BTC`` notification: ``created``, ``closed`` or ``settled``."""

    timestamp_ms: int
    state: str
    instrument_name: str

    def to_json(self) -> dict:
        return {"timestamp": self.timestamp_ms, "state": self.state, "instrument_name": self.instrument_name}


@dataclass(frozen=True, slots=True)
class UniverseSettings:
    """How big the chain is.  Defaults give a 2025-like chain of about 700 to 850 options.

    ``max_instruments`` scales the chain down (nearest-to-the-money strikes of the nearest expiries
    first) or up (more strikes per expiry).  ``instruments`` replaces the generated chain with an
    explicit list of names; it is then static apart from expiry (see :class:`Universe`).
    """

    daily_expiries: int = 3
    weekly_expiries: int = 3
    monthly_expiries: int = 3
    quarterly_expiries: int = 4
    max_instruments: int | None = None
    instruments: tuple[str, ...] = ()
    currency: str = "BTC"


def expiry_schedule(now_s: float, settings: UniverseSettings) -> list[date]:
    """The expiries that should be listed at ``now_s``, sorted; each one is strictly in the future."""
    now = datetime.fromtimestamp(now_s, UTC)
    first = now.date() if now.hour < EXPIRY_HOUR_UTC else now.date() + timedelta(days=1)
    dates: set[date] = {first + timedelta(days=i) for i in range(settings.daily_expiries)}
    friday = first + timedelta(days=(FRIDAY - first.weekday()) % 7)
    dates.update(friday + timedelta(weeks=i) for i in range(settings.weekly_expiries))
    dates.update(_month_ends(first, settings.monthly_expiries, months=range(1, 13)))
    dates.update(_month_ends(first, settings.quarterly_expiries, months=QUARTER_MONTHS))
    return sorted(dates)


def _month_ends(first: date, count: int, months) -> list[date]:
    found: list[date] = []
    year, month = first.year, first.month
    while len(found) < count:
        candidate = last_friday(year, month)
        if month in months and candidate >= first:
            found.append(candidate)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def strike_step(underlying: float, tenor_days: float) -> float:
    """Strike spacing: about 1% of spot for dailies/weeklies, 2% monthly, 5% beyond ~2 months."""
    fraction = 0.01 if tenor_days <= 14 else 0.02 if tenor_days <= 60 else 0.05
    target = underlying * fraction
    return float(min(NICE_STRIKE_STEPS, key=lambda step: abs(math.log(step / target))))


def default_strike_count(tenor_days: float) -> int:
    """Strikes per expiry by tenor, close to the 2025 fixture (21 daily, ~32 weekly, ~42 monthly)."""
    if tenor_days <= 4:
        return 21
    if tenor_days <= 30:
        return 32
    return 42 if tenor_days <= 120 else 36


def strikes_for(underlying: float, tenor_days: float, count: int) -> list[float]:
    """``count`` strikes on the tenor's grid, centred on the money, all positive, nearest-ATM first."""
    step = strike_step(underlying, tenor_days)
    atm = round(underlying / step)
    strikes: list[float] = []
    offset = 0
    while len(strikes) < count and offset < 10 * count + 10:
        for k in (atm + offset, atm - offset) if offset else (atm,):
            if k > 0 and len(strikes) < count:
                strikes.append(float(k * step))
        offset += 1
    return strikes


@dataclass
class Universe:
    """The listed instruments and the rules that add and retire them.

    Instruments expire when ``now`` passes their 08:00 UTC expiration (only if that moment was still
    in the future when they were listed, so an explicit list of historical names stays live), and
    new expiries from :func:`expiry_schedule` are listed as the calendar moves (not with an explicit
    ``instruments`` list).  Expiries retired by hand (:meth:`roll_nearest_expiry`) are not re-listed.
    """

    settings: UniverseSettings = field(default_factory=UniverseSettings)
    live: dict[str, Instrument] = field(default_factory=dict)
    expired: dict[str, Instrument] = field(default_factory=dict)
    retired_expiries: set[date] = field(default_factory=set)
    _auto_expire: set[str] = field(default_factory=set)
    _ever_listed: set[date] = field(default_factory=set)
    _next_id: int = FIRST_INSTRUMENT_ID

    def populate(self, now_s: float, underlying: float) -> list[InstrumentEvent]:
        """List the initial chain (no ``created`` notifications are meaningful before anyone listens)."""
        if self.settings.instruments:
            return [self._add_named(name, now_s) for name in self.settings.instruments]
        schedule = expiry_schedule(now_s, self.settings)
        per_expiry = None
        if self.settings.max_instruments is not None:
            per_expiry = max(1, math.ceil(self.settings.max_instruments / (2 * len(schedule))))
        events: list[InstrumentEvent] = []
        for expiry in schedule:
            events += self.list_expiry(expiry, now_s, underlying, per_expiry)
        self._ever_listed.update(schedule)
        if self.settings.max_instruments is not None:
            for name in list(self.live)[self.settings.max_instruments :]:
                del self.live[name]
                self._auto_expire.discard(name)
            events = [e for e in events if e.instrument_name in self.live]
        return events

    def list_expiry(
        self, expiry: date, now_s: float, underlying: float, strikes: int | None = None
    ) -> list[InstrumentEvent]:
        """List calls and puts of one expiry around ``underlying``; returns their ``created`` events."""
        tenor_days = max(0.0, (expiry_timestamp_ms(expiry) / 1000 - now_s) / 86400)
        count = strikes if strikes is not None else default_strike_count(tenor_days)
        events = []
        for strike in sorted(strikes_for(underlying, tenor_days, count)):
            for option_type in ("call", "put"):
                name = format_option_name(self.settings.currency, expiry, strike, option_type)
                if name not in self.live and name not in self.expired:
                    events.append(self._add(name, expiry, strike, option_type, now_s))
        return events

    def _add_named(self, name: str, now_s: float) -> InstrumentEvent:
        parsed = parse_option_name(name)
        return self._add(name, parsed.expiry, parsed.strike, parsed.option_type, now_s)

    def _add(self, name: str, expiry: date, strike: float, option_type: str, now_s: float) -> InstrumentEvent:
        now_ms = int(now_s * 1000)
        instrument = Instrument(
            name,
            expiry,
            strike,
            option_type,
            self._next_id,
            now_ms,
            settlement_period(expiry),
            self.settings.currency,
        )
        self._next_id += 1
        self.live[name] = instrument
        if instrument.expiration_timestamp_ms > now_ms:
            self._auto_expire.add(name)
        return InstrumentEvent(now_ms, "created", name)

    def expire(self, name: str, now_s: float) -> list[InstrumentEvent]:
        """Retire one instrument now: ``closed`` then ``settled``.  Unknown names give no events."""
        instrument = self.live.pop(name, None)
        if instrument is None:
            return []
        self._auto_expire.discard(name)
        self.expired[name] = instrument
        now_ms = int(now_s * 1000)
        return [InstrumentEvent(now_ms, "closed", name), InstrumentEvent(now_ms, "settled", name)]

    def nearest_expiry(self) -> date | None:
        return min((i.expiry for i in self.live.values()), default=None)

    def roll_nearest_expiry(self, now_s: float) -> list[InstrumentEvent]:
        """Expire every instrument of the nearest expiry now, as if its 08:00 UTC had come."""
        nearest = self.nearest_expiry()
        if nearest is None:
            return []
        self.retired_expiries.add(nearest)
        events: list[InstrumentEvent] = []
        for name in [n for n, i in self.live.items() if i.expiry == nearest]:
            events += self.expire(name, now_s)
        return events

    def create_expiry(self, now_s: float, underlying: float, expiry: date | None = None) -> list[InstrumentEvent]:
        """List a new expiry now (default: the first future day without one) with a scaled strike count."""
        if expiry is None:
            listed = {i.expiry for i in self.live.values()} | self.retired_expiries
            day = datetime.fromtimestamp(now_s, UTC).date() + timedelta(days=1)
            while day in listed:
                day += timedelta(days=1)
            expiry = day
        self.retired_expiries.discard(expiry)
        self._ever_listed.add(expiry)
        return self.list_expiry(expiry, now_s, underlying, self._scaled_strikes())

    def _scaled_strikes(self) -> int | None:
        if self.settings.max_instruments is None:
            return None
        expiries = max(1, len({i.expiry for i in self.live.values()}))
        return max(1, self.settings.max_instruments // (2 * expiries))

    def roll(self, now_s: float, underlying: float) -> list[InstrumentEvent]:
        """Expire what is due at ``now_s`` and list expiries the schedule now wants."""
        now_ms = int(now_s * 1000)
        events: list[InstrumentEvent] = []
        due = [n for n in self._auto_expire if self.live[n].expiration_timestamp_ms <= now_ms]
        for name in sorted(due):
            events += self.expire(name, now_s)
        if self.settings.instruments:
            return events
        for expiry in expiry_schedule(now_s, self.settings):
            if expiry in self._ever_listed or expiry in self.retired_expiries:
                continue
            self._ever_listed.add(expiry)
            created = self.list_expiry(expiry, now_s, underlying, self._scaled_strikes())
            room = None if self.settings.max_instruments is None else self.settings.max_instruments - len(self.live)
            for event in created[len(created) + room :] if room is not None and room < 0 else []:
                del self.live[event.instrument_name]
                self._auto_expire.discard(event.instrument_name)
            events += [e for e in created if e.instrument_name in self.live]
        return events

    def instruments_json(self, expired: bool = False) -> list[dict]:
        if expired:
            return [i.to_json(is_active=False) for i in self.expired.values()]
        return [i.to_json() for i in self.live.values()]
