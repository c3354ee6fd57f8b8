"""One-shot public calls: the live chain, the index price, errors and a server that never answers."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.server import serve

from optionstream_pipeline.deribit.public_api import fetch_index_price, fetch_option_names
from optionstream_pipeline.deribit.rpc import RpcError
from optionstream_pipeline_tests.support.fixtures import RECORDING


def test_option_names_and_index_price_come_from_the_exchange(simulator) -> None:
    sim = simulator(max_instruments=30, underlying=87_000.0)
    assert asyncio.run(fetch_option_names(sim.url)) == sorted(sim.market.instruments())
    price = asyncio.run(fetch_index_price(sim.url))
    assert price == pytest.approx(sim.market.underlying, rel=0.05)


def test_an_error_reply_is_raised_with_its_code(simulator) -> None:
    sim = simulator(replay_path=str(RECORDING))  # a recording has no index to quote
    with pytest.raises(RpcError) as caught:
        asyncio.run(fetch_index_price(sim.url))
    assert caught.value.code == -32602


def test_a_server_that_never_answers_times_out() -> None:
    async def silent(connection) -> None:
        await connection.wait_closed()

    async def call() -> None:
        async with serve(silent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            await fetch_index_price(f"ws://127.0.0.1:{port}", timeout_s=0.5)

    with pytest.raises(TimeoutError):
        asyncio.run(call())
