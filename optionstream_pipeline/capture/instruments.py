"""Ask Deribit which options are live (``public/get_instruments``), over a short-lived WebSocket.

Used when ``deribit.instruments`` is ``auto`` and no discovered universe is available. The parse is
tolerant: instrument objects gain and lose fields over the years, and only the name, kind and
expiry matter here.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from websockets.asyncio.client import connect

from optionstream_pipeline.capture.protocol import encode_request, error_from_reply

log = logging.getLogger(__name__)


async def fetch_instruments(url: str, currency: str = "BTC", timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The live option objects of ``currency``, as Deribit returns them."""
    async with connect(url, compression=None, open_timeout=timeout_s, ping_interval=None) as ws:
        params = {"currency": currency, "kind": "option", "expired": False}
        await ws.send(encode_request(1, "public/get_instruments", params), text=True)
        while True:
            reply = msgspec.json.decode(await ws.recv(decode=False))
            if reply.get("id") == 1:
                break
    if "error" in reply:
        raise error_from_reply(reply, "public/get_instruments")
    return [item for item in reply.get("result") or [] if isinstance(item, dict)]


async def fetch_option_names(url: str, currency: str = "BTC", timeout_s: float = 10.0) -> list[str]:
    instruments = await fetch_instruments(url, currency, timeout_s)
    names = sorted(
        item["instrument_name"]
        for item in instruments
        if item.get("kind", "option") == "option" and isinstance(item.get("instrument_name"), str)
    )
    log.info("Deribit lists %d live %s options", len(names), currency)
    return names
