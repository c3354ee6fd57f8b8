"""JSON-RPC framing as Deribit speaks it: the frame limit and error replies."""

from __future__ import annotations

import msgspec
import pytest

from optionstream_pipeline.deribit.protocol import MAX_CHANNELS_PER_SUBSCRIBE, book_channel
from optionstream_pipeline.deribit.rpc import encode_request, error_from_reply


def test_a_full_subscribe_batch_fits_deribits_frame_limit() -> None:
    channels = [book_channel(f"BTC-27JUN25-{100000 + i * 1000}-C", "100ms") for i in range(MAX_CHANNELS_PER_SUBSCRIBE)]
    frame = encode_request(7, "public/subscribe", {"channels": channels})
    assert msgspec.json.decode(frame) == {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "public/subscribe",
        "params": {"channels": channels},
    }


def test_an_oversized_request_is_refused_before_sending() -> None:
    channels = [book_channel(f"BTC-27JUN25-{100000 + i}-C", "100ms") for i in range(1200)]
    with pytest.raises(ValueError, match="at most 32768"):
        encode_request(1, "public/subscribe", {"channels": channels})


def test_error_without_message_gets_deribits_name() -> None:
    error = error_from_reply({"error": {"code": 10028}}, "public/subscribe")
    assert error.code == 10028
    assert "too_many_requests" in str(error) and "public/subscribe" in str(error)
