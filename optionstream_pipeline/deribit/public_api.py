"""One-shot calls to Deribit's public API over a short-lived WebSocket (discovery, ``auto`` universes).

Parses tolerantly: instrument objects gain and lose fields over the years, and a missing optional
field must not break discovery. TLS follows capture's rules (:mod:`.tls`): ``wss://`` is verified
against the system trust store or ``ca_file`` (``deribit.tls_ca_file``), and a refused certificate
raises :class:`~optionstream_pipeline.deribit.tls.CertificateVerificationError` naming the problem.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from websockets.asyncio.client import connect

from optionstream_pipeline.deribit.rpc import FRAME_LOGGER, encode_request, error_from_reply
from optionstream_pipeline.deribit.tls import client_ssl_context, verification_error

log = logging.getLogger(__name__)


async def call_public(
    url: str, method: str, params: dict[str, Any], timeout_s: float = 10.0, ca_file: str | None = None
) -> Any:
    """Open a connection, send one request, return its ``result``; the whole call bounded by ``timeout_s``."""
    try:
        reply = await _exchange(url, method, params, timeout_s, ca_file)
    except OSError as exc:
        refused = verification_error(exc, url, ca_file)
        if refused is not None:
            raise refused from exc
        raise
    if "error" in reply:
        raise error_from_reply(reply, method)
    return reply.get("result")


async def _exchange(url: str, method: str, params: dict[str, Any], timeout_s: float, ca_file: str | None) -> Any:
    ssl_context = client_ssl_context(url, ca_file)
    async with (
        asyncio.timeout(timeout_s),
        connect(
            url,
            ssl=ssl_context,
            compression=None,
            open_timeout=timeout_s,
            ping_interval=None,
            max_size=None,
            logger=FRAME_LOGGER,
        ) as ws,
    ):
        await ws.send(encode_request(1, method, params), text=True)
        while True:
            reply = msgspec.json.decode(await ws.recv(decode=False))
            if isinstance(reply, dict) and reply.get("id") == 1:
                return reply


async def fetch_instruments(
    url: str, currency: str = "BTC", timeout_s: float = 10.0, ca_file: str | None = None
) -> list[dict[str, Any]]:
    """The live option objects of ``currency``, as Deribit returns them."""
    params = {"currency": currency, "kind": "option", "expired": False}
    result = await call_public(url, "public/get_instruments", params, timeout_s, ca_file)
    return [item for item in result or [] if isinstance(item, dict)]


async def fetch_option_names(
    url: str, currency: str = "BTC", timeout_s: float = 10.0, ca_file: str | None = None
) -> list[str]:
    instruments = await fetch_instruments(url, currency, timeout_s, ca_file)
    names = sorted(
        item["instrument_name"]
        for item in instruments
        if item.get("kind", "option") == "option" and isinstance(item.get("instrument_name"), str)
    )
    log.info("Deribit lists %d live %s options", len(names), currency)
    return names


async def fetch_index_price(
    url: str, index_name: str = "btc_usd", timeout_s: float = 10.0, ca_file: str | None = None
) -> float:
    """The current index price (``public/get_index_price``); raises on an error reply or a timeout."""
    result = await call_public(url, "public/get_index_price", {"index_name": index_name}, timeout_s, ca_file)
    return float(result["index_price"])
