"""Deribit's credit-based rate limits, per session: pure token buckets driven by a passed-in time.

Deribit charges every request credits from a refilling pool and answers 10028 ``too_many_requests``
when the pool is short.  Subscriptions and ``get_instruments`` have their own, much tighter, limits.
"""

from __future__ import annotations

from dataclasses import dataclass

SUBSCRIPTION_METHODS = frozenset({"public/subscribe", "public/unsubscribe", "public/unsubscribe_all"})
GET_INSTRUMENTS = "public/get_instruments"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Defaults follow Deribit's published non-matching-engine limits; tests make them tight."""

    enabled: bool = True
    request_cost: float = 500.0
    credit_capacity: float = 50_000.0
    credit_refill_per_s: float = 10_000.0
    subscribe_burst: float = 10.0
    subscribe_per_s: float = 3.0
    get_instruments_burst: float = 5.0
    get_instruments_per_s: float = 0.1


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``refill_per_s``; starts full."""

    __slots__ = ("capacity", "refill_per_s", "tokens", "updated_s")

    def __init__(self, capacity: float, refill_per_s: float, now_s: float) -> None:
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self.tokens = capacity
        self.updated_s = now_s

    def available(self, now_s: float) -> float:
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_s)
        self.updated_s = max(self.updated_s, now_s)
        return self.tokens

    def take(self, cost: float) -> None:
        self.tokens -= cost


class SessionCredits:
    """All buckets of one session; :meth:`allow` charges a request or refuses it without charging."""

    def __init__(self, limits: RateLimits, now_s: float) -> None:
        self.limits = limits
        self.credits = TokenBucket(limits.credit_capacity, limits.credit_refill_per_s, now_s)
        self.subscriptions = TokenBucket(limits.subscribe_burst, limits.subscribe_per_s, now_s)
        self.get_instruments = TokenBucket(limits.get_instruments_burst, limits.get_instruments_per_s, now_s)

    def allow(self, method: str, now_s: float) -> bool:
        if not self.limits.enabled:
            return True
        charges = [(self.credits, self.limits.request_cost)]
        if method in SUBSCRIPTION_METHODS:
            charges.append((self.subscriptions, 1.0))
        elif method == GET_INSTRUMENTS:
            charges.append((self.get_instruments, 1.0))
        if any(bucket.available(now_s) < cost for bucket, cost in charges):
            return False
        for bucket, cost in charges:
            bucket.take(cost)
        return True
