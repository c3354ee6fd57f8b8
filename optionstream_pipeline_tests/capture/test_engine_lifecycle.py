"""The engine's own life: stopping at any moment, and a universe source that misbehaves."""

from __future__ import annotations

import asyncio
import threading
from http import HTTPStatus

from websockets.asyncio.server import serve

from optionstream_pipeline.capture.engine import CaptureEngine, EngineThread
from optionstream_pipeline.capture.universe import build_engine
from optionstream_pipeline_tests.capture.conftest import capture_settings, running_capture, wait_subscribed
from optionstream_pipeline_tests.support.waiting import wait_until


def test_stop_while_a_connection_is_still_opening_returns(kafka_bootstrap, kafka_topic) -> None:
    handshake_started = threading.Event()
    release = threading.Event()

    async def slow_handshake(connection, request):
        handshake_started.set()
        await asyncio.to_thread(release.wait, 30)
        return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")

    async def start_server():
        return await serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=slow_handshake)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start_server(), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = capture_settings(f"ws://127.0.0.1:{port}", kafka_bootstrap, kafka_topic)
        capture = EngineThread(CaptureEngine(settings, ["BTC-27JUN25-100000-C"])).start()
        wait_until(handshake_started.is_set, 10, message="capture is opening its connection")
        final = capture.stop(timeout_s=5)  # raises TimeoutError if the opening connection blocks the stop
        assert final.connections_up == 0
    finally:
        release.set()

        async def stop_server() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop_server(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_an_empty_or_failing_universe_source_keeps_the_books_followed(simulator, kafka_bootstrap, kafka_topic) -> None:
    sim = simulator(max_instruments=8)
    names = sim.market.instruments()[:4]
    answers: list[object] = [names]
    calls = threading.Semaphore(0)

    def source() -> list[str]:
        calls.release()
        answer = answers[-1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic)
    with running_capture(settings, [], instrument_source=source, source_refresh_s=0.05) as capture:
        wait_subscribed(capture, len(names))
        for bad in ([], OSError("universe directory unmounted")):
            answers.append(bad)
            for _ in range(3):  # let the engine read the bad answer several times
                assert calls.acquire(timeout=10)
            assert capture.engine.instruments == set(names)
            assert capture.engine.stats().instruments_subscribed == len(names)


def test_capture_without_a_universe_follows_the_whole_live_chain(simulator, kafka_bootstrap, kafka_topic, tmp_path):
    sim = simulator(max_instruments=12)
    settings = capture_settings(
        sim.url,
        kafka_bootstrap,
        kafka_topic,
        **{"deribit.instruments": "auto", "discovery.universe_path": str(tmp_path)},
    )
    capture = EngineThread(build_engine(settings)).start()
    try:
        wait_subscribed(capture, len(sim.market.instruments()))
        assert capture.engine.instruments == set(sim.market.instruments())
    finally:
        capture.stop()
