"""JSON-RPC 2.0 as Deribit speaks it: request frames, error replies, and a quiet logger for the wire.

Shared by every client of the API: the capture connections and the one-shot public calls.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from optionstream_pipeline.deribit.protocol import ERROR_MESSAGES, MAX_FRAME_BYTES

# WebSocket libraries log every frame at DEBUG, public/auth's client_secret included: the logger
# handed to them drops everything below INFO, so that no log level ever prints a frame (and its
# connection lines still follow the level the user chose).
FRAME_LOGGER = logging.getLogger("optionstream_pipeline.websocket")
FRAME_LOGGER.addFilter(lambda record: record.levelno >= logging.INFO)


class RpcError(Exception):
    """An error reply from Deribit (``code`` as documented in the API)."""

    def __init__(self, code: int, message: str, data: Any = None, method: str | None = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        self.method = method
        where = f" to {method}" if method else ""
        super().__init__(f"Deribit error {code} {message!r}{where}" + (f": {data}" if data else ""))


def encode_request(request_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    frame = msgspec.json.encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
    if len(frame) > MAX_FRAME_BYTES:
        # Deribit refuses such a frame with -32600; fail here, naming the cause, rather than there.
        raise ValueError(f"{method} request is {len(frame)} bytes; Deribit accepts at most {MAX_FRAME_BYTES}")
    return frame


def error_from_reply(reply: dict[str, Any], method: str | None = None) -> RpcError:
    error = reply.get("error")
    if not isinstance(error, dict):
        return RpcError(0, f"malformed error: {error!r}", method=method)
    code = error.get("code", 0)
    message = error.get("message") or ERROR_MESSAGES.get(code, "unknown error")
    return RpcError(code, message, error.get("data"), method)
