"""`chimera-bus console` in a real headless browser (Debian's chromium + chromium-driver).

An agent dead-letters a message; the console runs on a free loopback port in
this process; the page must list the agent (heard on discovery), show the
failed message in its group, replay it after the confirmation dialog, and the
agent (fixed meanwhile) must handle it. With CHIMERA_CONSOLE_SCREENSHOTS=DIR
the views are saved there (docs/images/ holds the committed ones).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait
from starlette.applications import Starlette

from messaging import ConnectionPool, EventPublisher
from messaging.config import RabbitMQConfig
from messaging.console import create_app
from messaging.console.bus import Bus
from tests import broker_env
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for
from tests.integration.test_cli import put_in_dlq
from tests.integration.test_cli_trace import recording, stream  # noqa: F401 (fixtures)

GROUP = "section.group[data-error-type='builtins.RuntimeError']"


def browser_binaries() -> tuple[str, str]:
    """chromium and chromedriver; under CI=true their absence fails the test, never skips it."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found:
        why = (
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    chromium, driver = found
    assert chromium is not None
    assert driver is not None
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromium, driver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,900")
    made = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield made
    finally:
        made.quit()  # chromium and chromedriver with it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def discovery(names: Names, monkeypatch: pytest.MonkeyPatch) -> str:
    """Agents made in the test announce on an exchange of the test's own (deleted after)."""
    exchange = names.new_exchange("discovery")
    monkeypatch.setenv("DISCOVERY__ENABLED", "true")
    monkeypatch.setenv("DISCOVERY__INTERVAL", "0.5")
    monkeypatch.setenv("DISCOVERY__EXCHANGE", exchange)
    for key, value in broker_env.environ().items():
        monkeypatch.setenv(key, value)
    return exchange


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """``app`` on a free loopback port, in a thread; stopped (and joined) at the end."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the console to listen")
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "the console did not stop"


@pytest.fixture
def console(config: RabbitMQConfig, discovery: str, recording: str) -> Iterator[str]:  # noqa: F811
    with serving(create_app(Bus(config, recording), discovery=discovery)) as address:
        yield address


def shot(browser: WebDriver, name: str) -> None:
    folder = os.environ.get("CHIMERA_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"console-{name}.png"))


def text_of(browser: WebDriver, css: str) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def test_the_page_lists_the_agent_and_replays_its_failed_message_after_confirmation(
    browser: WebDriver,
    console: str,
    config: RabbitMQConfig,
    raw: RawBroker,
    names: Names,
) -> None:
    exchange, queue = names.exchange, names.queue()
    correlation_id = f"console-{uuid.uuid4().hex[:8]}"
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    agent = Recorder(
        pool, exchange=exchange, queue=queue, routing_keys=["query.*"], fail_on=["broken"]
    ).run_in_thread()
    publisher = EventPublisher(pool, "asker", exchange)
    try:
        publisher.publish(query("broken", correlation_id=correlation_id), "query.request")
        wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the dead letter")

        browser.get(console)
        wait = WebDriverWait(browser, 20, poll_frequency=0.1)
        # Heard on discovery (its card names the queue), not only seen in the recorder's records.
        wait.until(lambda b: queue in text_of(b, "#agents tbody"))
        assert "recorder" in text_of(browser, "#agents tbody")
        assert text_of(browser, "#agents-source") == "from discovery"
        wait.until(lambda b: "1 dead letter(s)" in text_of(b, GROUP))
        assert "recorder" in text_of(browser, GROUP)
        shot(browser, "overview")
        edge = "#flow g.edge[data-from='asker'][data-to='recorder'] text"
        wait.until(lambda b: "1 msg, 0.2/min, 1 err" in text_of(b, edge))
        assert "recorder" in text_of(browser, "#flow g.node[data-agent='recorder']")
        browser.execute_script("document.getElementById('flow').scrollIntoView()")
        shot(browser, "flow")
        browser.execute_script("window.scrollTo(0, 0)")

        browser.find_element(By.CSS_SELECTOR, f"{GROUP} button.show").click()
        wait.until(lambda b: correlation_id in text_of(b, GROUP))
        assert "refusing 'broken'" in text_of(browser, GROUP)
        shot(browser, "group")

        browser.find_element(By.CSS_SELECTOR, f"{GROUP} button.link").click()
        wait.until(lambda b: "FAILED builtins.RuntimeError" in text_of(b, "#timeline"))
        assert "asker" in text_of(browser, "#timeline")
        hops = browser.find_elements(By.CSS_SELECTOR, "#sequence g.hop")
        assert [
            (h.get_attribute("data-from"), h.get_attribute("data-to"), h.get_attribute("class"))
            for h in hops
        ] == [("asker", "recorder", "hop failed")]
        assert hops[0].text.startswith("query.request ")
        assert hops[0].text.endswith(" ms ✗ FAILED builtins.RuntimeError")
        lifelines = browser.find_elements(By.CSS_SELECTOR, "#sequence g.agent")
        assert [line.get_attribute("data-agent") for line in lifelines] == ["asker", "recorder"]
        browser.execute_script("document.getElementById('sequence').scrollIntoView()")
        shot(browser, "sequence")
        shot(browser, "conversation")

        agent.fail_on.clear()  # the fix is deployed: now the message can be handled
        browser.find_element(By.CSS_SELECTOR, f"{GROUP} button.replay").click()
        wait.until(lambda b: b.find_element(By.ID, "confirm").get_attribute("open") is not None)
        assert f"Replay all 1 dead letter(s) of builtins.RuntimeError from {queue}.dlq?" in (
            text_of(browser, "#confirm-text")
        )
        shot(browser, "confirm")
        assert raw.depth(f"{queue}.dlq") == 1  # nothing done before the confirmation
        browser.find_element(By.ID, "confirm-yes").click()

        wait.until(lambda b: "replayed 1 of 1" in text_of(b, "#result"))
        wait_for(lambda: agent.texts() == ["broken"], what="the replayed message to be handled")
        assert raw.depth(f"{queue}.dlq") == 0
        wait.until(lambda b: not b.find_elements(By.CSS_SELECTOR, GROUP))
        shot(browser, "replayed")
    finally:
        publisher.close()
        agent.stop_and_join()
        pool.close()


MARKUP = "<img id='injected' src='x'><b>bold</b>"


def test_markup_in_a_dead_letter_is_shown_as_text_never_run(
    browser: WebDriver, config: RabbitMQConfig, raw: RawBroker, names: Names
) -> None:
    queue = names.queue()
    raw.channel.queue_declare(f"{queue}.dlq")
    put_in_dlq(
        raw, queue, b"\x00not protobuf", type="chimera.v1.QueryRequest",
        message_id=MARKUP, correlation_id=MARKUP,
        headers={"x-chimera-error-type": MARKUP, "x-chimera-error-message": MARKUP},
    )  # fmt: skip
    with serving(create_app(Bus(config, "no-such-stream", (queue,)))) as address:
        browser.get(address)
        wait = WebDriverWait(browser, 20, poll_frequency=0.1)
        wait.until(lambda b: MARKUP in text_of(b, "#groups"))
        browser.find_element(By.CSS_SELECTOR, "#groups button.show").click()
        wait.until(lambda b: text_of(b, "#groups").count(MARKUP) >= 3)
        assert not browser.find_elements(By.ID, "injected")
        assert not browser.find_elements(By.CSS_SELECTOR, "#groups b b, #groups img")
