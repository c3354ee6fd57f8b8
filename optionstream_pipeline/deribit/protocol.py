"""Deribit JSON-RPC constants: error codes, channel names, limits (see docs/deribit-protocol notes)."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Deribit and JSON-RPC error codes that capture and the simulator act on."""

    TOO_MANY_REQUESTS = 10028
    TOO_MANY_CONCURRENT_REQUESTS = 10066
    RETRY = 10040
    BAD_REQUEST = 11050
    SYSTEM_MAINTENANCE = 11051
    SUBSCRIBE_ERROR_UNSUBSCRIBED = 11052
    UNAUTHENTICATED_PUBLIC_REQUESTS_TEMPORARILY_DISABLED = 11056
    NOT_FOUND = 13020
    TEMPORARILY_UNAVAILABLE = 13028
    RAW_SUBSCRIPTIONS_NOT_AVAILABLE_FOR_UNAUTHORIZED = 13778
    REQUEST_ENTITY_TOO_LARGE = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    PARSE_ERROR = -32700


ERROR_MESSAGES: dict[int, str] = {
    ErrorCode.TOO_MANY_REQUESTS: "too_many_requests",
    ErrorCode.TOO_MANY_CONCURRENT_REQUESTS: "too_many_concurrent_requests",
    ErrorCode.RETRY: "retry",
    ErrorCode.BAD_REQUEST: "bad_request",
    ErrorCode.SYSTEM_MAINTENANCE: "system_maintenance",
    ErrorCode.SUBSCRIBE_ERROR_UNSUBSCRIBED: "subscribe_error_unsubscribed",
    ErrorCode.UNAUTHENTICATED_PUBLIC_REQUESTS_TEMPORARILY_DISABLED: (
        "unauthenticated_public_requests_temporarily_disabled"
    ),
    ErrorCode.NOT_FOUND: "not_found",
    ErrorCode.TEMPORARILY_UNAVAILABLE: "temporarily_unavailable",
    ErrorCode.RAW_SUBSCRIPTIONS_NOT_AVAILABLE_FOR_UNAUTHORIZED: "raw_subscriptions_not_available_for_unauthorized",
    ErrorCode.REQUEST_ENTITY_TOO_LARGE: "request entity too large",
    ErrorCode.METHOD_NOT_FOUND: "Method not found",
    ErrorCode.INVALID_PARAMS: "Invalid params",
    ErrorCode.PARSE_ERROR: "Parse error",
}

# Errors after which the same request may succeed if sent again later.
RETRYABLE_ERRORS = frozenset(
    {
        ErrorCode.TOO_MANY_REQUESTS,
        ErrorCode.TOO_MANY_CONCURRENT_REQUESTS,
        ErrorCode.RETRY,
        ErrorCode.SYSTEM_MAINTENANCE,
        ErrorCode.UNAUTHENTICATED_PUBLIC_REQUESTS_TEMPORARILY_DISABLED,
        ErrorCode.TEMPORARILY_UNAVAILABLE,
    }
)

MAX_FRAME_BYTES = 32 * 1024
MAX_CHANNELS_PER_SUBSCRIBE = 250
MIN_HEARTBEAT_INTERVAL_S = 10
BOOK_INTERVALS = ("100ms", "agg2", "raw")
INSTRUMENT_STATE_CHANNEL = "instrument.state.option.BTC"
PLATFORM_STATE_CHANNEL = "platform_state"

PRODUCTION_URL = "wss://www.deribit.com/ws/api/v2"
TESTNET_URL = "wss://test.deribit.com/ws/api/v2"


def book_channel(instrument: str, interval: str) -> str:
    return f"book.{instrument}.{interval}"


def ticker_channel(instrument: str, interval: str) -> str:
    return f"ticker.{instrument}.{interval}"


def split_channel(channel: str) -> tuple[str, str, str] | None:
    """``book.BTC-9MAY25-70000-C.100ms`` -> ``("book", "BTC-9MAY25-70000-C", "100ms")``.

    Only the three-part ``book``/``ticker`` channels; anything else gives ``None``.
    Instrument names contain no dots, so the split is unambiguous.
    """
    parts = channel.split(".")
    if len(parts) != 3 or parts[0] not in ("book", "ticker"):
        return None
    return parts[0], parts[1], parts[2]
