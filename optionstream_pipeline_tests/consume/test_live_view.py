"""The live web view in real headless Chromium (Debian's ``chromium``, driven by Playwright): against
the simulator, capture and the real broker, the page shows each book as the exchange has it.

Screenshots of the ladder and of the chain grid are taken on the way (``docs/live-*.png`` when
``OPTIONSTREAM_UPDATE_SCREENSHOTS=1``, else under the test's temporary directory).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.capture.engine import EngineThread
from optionstream_pipeline.consume.consumer import BookConsumer
from optionstream_pipeline.consume.web.cli import ServerThread
from optionstream_pipeline.consume.web.server import LADDER_DEPTH, LiveBooks, Watching, _send_loop
from optionstream_pipeline.deribit.instruments import format_option_name, parse_option_name
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.capture.conftest import capture_settings, running_capture, wait_subscribed
from optionstream_pipeline_tests.support.waiting import wait_until

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Skipped without chromium on a developer's machine; under CI (which installs it) it must run.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="needs Debian's chromium (apt-get install chromium)"
)

INTERVAL = "100ms"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass
class Viewed:
    sim: SimulatorThread
    capture: EngineThread
    instruments: list[str]
    live: LiveBooks
    page: object  # playwright Page
    shots: Path


@pytest.fixture(scope="module")
def viewed(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Viewed]:
    topic = f"test-view-{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=-1)])[topic].result(30)
    shots = DOCS if os.environ.get("OPTIONSTREAM_UPDATE_SCREENSHOTS") == "1" else tmp_path_factory.mktemp("shots")
    with SimulatorThread(SimulatorSettings(instruments=chain(), events_per_second=200)) as sim:
        instruments = sim.market.instruments()
        settings = capture_settings(sim.url, kafka_bootstrap, topic)
        with running_capture(settings, instruments) as capture:
            wait_subscribed(capture, len(instruments))
            live = LiveBooks(lambda: BookConsumer(kafka_bootstrap, topic, "earliest"), topic)
            with ServerThread(live) as server, playwright.sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
                page.goto(server.url)
                yield Viewed(sim, capture, instruments, live, page, shots)
                browser.close()


def chain() -> tuple[str, ...]:
    """A month's expiry with nine strikes, and a nearer one with three: a chain grid worth looking at."""
    today = datetime.now(UTC).date()
    expiries = {
        today + timedelta(days=9): range(95_000, 106_000, 5_000),
        today + timedelta(days=30): range(80_000, 121_000, 5_000),
    }
    return tuple(format_option_name("BTC", expiry, strike, kind) for expiry, strikes in expiries.items()
                 for strike in strikes for kind in ("call", "put"))  # fmt: skip


def ladder(page) -> tuple[str, int | None, dict[float, float], dict[float, float]]:
    """What the page shows: the instrument, its change_id, and the levels (price -> amount) per side."""
    shown = page.evaluate(
        """() => {
        const ladder = document.getElementById('ladder');
        const levels = [...document.querySelectorAll('#levels tr.level')].map(
            (row) => [row.dataset.side, Number(row.dataset.price), Number(row.dataset.amount)]);
        return [ladder.dataset.instrument, ladder.dataset.changeId, levels];
    }"""
    )
    name, change_id, levels = shown
    bids = {price: amount for side, price, amount in levels if side == "bid"}
    asks = {price: amount for side, price, amount in levels if side == "ask"}
    return name, int(change_id) if change_id else None, bids, asks


def best(side: dict[float, float], highest: bool) -> dict[float, float]:
    return dict(sorted(side.items(), reverse=highest)[:LADDER_DEPTH])


def pick(page, name: str) -> None:
    option = parse_option_name(name)
    page.wait_for_function(f"[...document.querySelectorAll('#expiry option')].some(o => o.value === '{option.expiry}')")
    page.select_option("#expiry", option.expiry.isoformat())
    page.select_option("#kind", option.option_type)
    page.select_option("#strike", str(int(option.strike) if option.strike.is_integer() else option.strike))


def test_the_ladder_shows_the_exchanges_book_within_a_second(viewed: Viewed) -> None:
    page, sim = viewed.page, viewed.sim
    for name in (viewed.instruments[5], viewed.instruments[-2]):  # one, then another
        pick(page, name)
        current = sim.market.book(name, INTERVAL).change_id  # the ladder must show this or later

        def shows_the_book(name: str = name, current: int = current) -> bool:
            shown, change_id, bids, asks = ladder(page)
            truth = change_id and sim.market.book_at(name, INTERVAL, change_id)
            return (shown == name and bool(truth) and change_id >= current
                    and (bids, asks) == (best(truth.bids, True), best(truth.asks, False)))  # fmt: skip

        wait_until(shows_the_book, 1.0, interval=0.02, message=f"the ladder of {name} equal to the exchange's book")
        assert page.get_attribute("#ladder", "data-reliable") == "true"
        assert page.is_hidden("#book-banner")
    wait_until(lambda: page.inner_text("#rate") not in ("-", "0.0"), 5, message="an update rate shown")
    page.screenshot(path=str(viewed.shots / "live-ladder.png"))


def test_the_chain_grid_lists_every_strike_of_the_expiry_with_both_sides(viewed: Viewed) -> None:
    page = viewed.page
    expiries = Counter(parse_option_name(n).expiry for n in viewed.instruments)
    expiry = expiries.most_common(1)[0][0]
    names = [n for n in viewed.instruments if parse_option_name(n).expiry == expiry]
    strikes = sorted({parse_option_name(n).strike for n in names})
    page.click("#tab-chain")
    page.select_option("#chain-expiry", expiry.isoformat())

    def shown() -> list[tuple[float, int]]:
        return page.evaluate(
            """() => [...document.querySelectorAll('#chain-rows tr')].map((row) => [Number(row.dataset.strike),
                [...row.querySelectorAll('td.bidp, td.askp')].filter((c) => c.textContent.trim() !== '').length])"""
        )

    def every_strike() -> bool:
        rows = shown()
        kinds = {s: sum(1 for n in names if parse_option_name(n).strike == s) for s in strikes}
        return [s for s, _ in rows] == strikes and all(count == 2 * kinds[s] for s, count in rows)

    wait_until(every_strike, 5, interval=0.05, message=f"every strike of {expiry} with its quotes")
    assert page.get_attribute("#chain", "data-expiry") == expiry.isoformat()
    page.screenshot(path=str(viewed.shots / "live-chain.png"), full_page=True)
    page.click("#tab-ladder")


class SlowBrowser:
    """A browser that takes half a second to take each message."""

    def __init__(self, live: LiveBooks) -> None:
        self.live = live
        self.received: list[tuple[int, dict]] = []  # the consumer's version when sent, the message
        self.held: list[bool] = []  # whether the sender held the consumer's lock while a send waited

    async def send_json(self, message: dict) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        self.received.append((self.live.version, json.loads(text)))
        await asyncio.sleep(0.5)
        # The consumer thread takes the lock for a batch at a time: a wait of a second for it fails
        # only when the sender itself holds it across this send.
        acquired = self.live.lock.acquire(timeout=1.0)
        if acquired:
            self.live.lock.release()
        self.held.append(not acquired)


def test_a_slow_browser_gets_the_latest_state_and_never_holds_the_consumer_back(viewed: Viewed) -> None:
    browser, name = SlowBrowser(viewed.live), viewed.instruments[5]

    async def watch_for(seconds: float) -> None:
        receiver = asyncio.ensure_future(asyncio.sleep(seconds))  # stands for the browser's messages
        await _send_loop(browser, viewed.live, Watching(instrument=name), "test", receiver)

    with ThreadPoolExecutor(1) as pool:  # a loop of its own: Playwright's runs in this thread
        pool.submit(asyncio.run, watch_for(3.0)).result()
    books = [(version, message) for version, message in browser.received if message["type"] == "book"]
    assert 3 <= len(books) <= 7  # at most one a half second: nothing queued up behind the slow sends
    assert not any(browser.held)  # the consumer is never held back by a send
    versions = [version for version, _ in books]
    assert all(later > earlier for earlier, later in itertools.pairwise(versions))  # it went on meanwhile
    change_ids = [message["change_id"] for _, message in books]
    assert change_ids == sorted(change_ids) and change_ids[-1] > change_ids[0]  # each the latest, never stale


def test_an_unreliable_book_is_shown_as_such_with_the_reason(viewed: Viewed) -> None:
    page = viewed.page
    name = viewed.instruments[5]
    pick(page, name)
    viewed.capture.stop()  # capture stopped: every book gets its disconnect marker
    wait_until(lambda: page.get_attribute("#ladder", "data-reliable") == "false", 5, message="the book unreliable")
    assert page.inner_text("#book-banner") == "Not reliable: disconnect: capture stopped"
    page.click("#tab-chain")
    wait_until(lambda: page.locator("#chain-rows td.stale").count() > 0, 5, message="stale quotes in the chain")
    assert "disconnect: capture stopped" in page.get_attribute("#chain-rows td.stale >> nth=0", "title")
