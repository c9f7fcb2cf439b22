"""The HTML report in a real browser: headless Chromium driven by Selenium.

`tcpdoctor report -o` runs for real (on this machine, and on a namespace holding a known
population), the page is opened from disk, and the test checks that it renders, that
the browser logged no error, and that it fetched nothing. Screenshots (light, dark) and
the pages are kept under artifacts/ at the repository root for people to look at.

Chromium and its driver come from Debian (`make deps`: chromium, chromium-driver);
Selenium is told where the driver is, so its manager never downloads anything. Under
CI=true a missing browser fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.netns import REPO, tcpdoctor
from support.population import populated_netns
from tcpdoctor.render import html_report

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = REPO / "artifacts"
WIDTH, HEIGHT = 1280, 900
MAX_SHOT_HEIGHT = 20_000
NETWORK_SCHEMES = ("http:", "https:", "ws:", "wss:", "ftp:")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WRITTEN = re.compile(r"^report written: .+ \((\d+) findings?\)$")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _browser_missing() -> str | None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return None
    return f"needs {', '.join(missing)} (make deps installs chromium and chromium-driver)"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    reason = _browser_missing()
    if reason is not None:
        if _in_ci():
            pytest.fail(f"browser test cannot run under CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    with (
        tempfile.TemporaryDirectory(prefix="tcpdoctor-chromium-") as profile,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("SE_OFFLINE", "1")  # belt and braces: the Service below names the driver
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(20)
        try:
            yield driver
        finally:
            driver.quit()


# --- helpers -----------------------------------------------------------------------------


def write_report(name: str, *argv: str) -> tuple[Path, int]:
    """Run the real CLI; return the page and the number of findings it announced."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / f"{name}.html"
    done = tcpdoctor("report", "-o", str(page), *argv, timeout=60)
    assert done.returncode == 0, done.stderr
    found = WRITTEN.match(done.stdout.strip())
    assert found is not None, done.stdout
    return page, int(found.group(1))


def open_page(driver: WebDriver, page: Path) -> None:
    driver.get_log("browser")  # forget what came before
    driver.get_log("performance")
    driver.set_window_size(WIDTH, HEIGHT)
    driver.get(page.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"


def assert_clean_console(driver: WebDriver) -> None:
    entries = driver.get_log("browser")
    errors = [e for e in entries if e.get("level") == "SEVERE"]
    assert not errors, errors
    policy = [e for e in entries if "Content Security Policy" in str(e.get("message"))]
    assert not policy, policy


def assert_fetched_nothing(driver: WebDriver, page: Path) -> None:
    """The page requested nothing but itself, and the tab nothing from the network."""
    url = page.resolve().as_uri()
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            requests.append((params["request"]["url"], params.get("documentURL")))
    assert (url, url) in requests, requests[-5:]
    by_page = [u for u, doc in requests if doc == url and u != url]
    assert not by_page, by_page
    network = [u for u, _ in requests if u.lower().startswith(NETWORK_SCHEMES)]
    assert not network, network


def screenshot(driver: WebDriver, name: str, *, dark: bool = False) -> Path:
    """The whole page (the window grows to its height) as artifacts/NAME.png."""
    scheme = "dark" if dark else "light"
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"media": "", "features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(WIDTH, min(height + 140, MAX_SHOT_HEIGHT))
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000
    driver.set_window_size(WIDTH, HEIGHT)
    return path


def elements(driver: WebDriver, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def assert_sections_render(driver: WebDriver, findings: int) -> None:
    assert driver.title.startswith("tcpdoctor report — "), driver.title
    for ident in ("findings", "states", "ports", "timeline", "close-wait", "sysctls", "notes"):
        (section,) = elements(driver, f"section#{ident}")
        assert section.is_displayed() and section.size["height"] > 40, ident
    assert len(elements(driver, "article.finding")) == findings
    if findings == 0:
        assert "No lifecycle problems found" in elements(driver, ".verdict")[0].text
    (states,) = elements(driver, "#states svg.chart")
    assert states.size["width"] > 500 and states.size["height"] > 40
    assert elements(driver, "#states svg rect.bar")
    assert len(elements(driver, "#sysctls tbody tr")) > 10


def assert_prints_without_navigation(driver: WebDriver) -> None:
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print", "features": []})
    try:
        (nav,) = elements(driver, "nav.toc")
        assert not nav.is_displayed()
        background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background in {"rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"}, background
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "", "features": []})


# --- tests -------------------------------------------------------------------------------


def test_report_of_this_machine_renders(browser: WebDriver) -> None:
    started = time.monotonic()
    page, findings = write_report("report-host")
    open_page(browser, page)
    assert_sections_render(browser, findings)
    assert_clean_console(browser)
    assert_fetched_nothing(browser, page)
    assert_prints_without_navigation(browser)
    screenshot(browser, "report-host")
    assert time.monotonic() - started < 30


@pytest.mark.kernel
def test_report_of_a_populated_namespace_renders_every_picture(browser: WebDriver) -> None:
    started = time.monotonic()
    with populated_netns() as pop:
        page, findings = write_report(
            "report-population", "--netns", pop.netns, "--watch", "2", "--interval", "0.5"
        )
        pop.assert_fresh()
    open_page(browser, page)
    assert_sections_render(browser, findings)
    # Clients hold ephemeral ports (TIME_WAIT to :5002, SYN_SENT to the blackhole).
    assert len(elements(browser, "#ports svg.capacity rect.track")) >= 2
    assert elements(browser, "#ports svg .capacity-line")
    # A watch of five samples: states, busiest destination and counter rates over time.
    lines = elements(browser, "#timeline svg.lines")
    assert len(lines) >= 3, len(lines)
    drawn = {
        cls
        for line in elements(browser, "#timeline polyline.series")
        for cls in (line.get_attribute("class") or "").split()
    }
    assert {"st-TIME_WAIT", "st-ESTABLISHED", "st-CLOSE_WAIT", "c-use", "c-rate"} <= drawn
    rows = elements(browser, "#close-wait tbody tr")
    assert any(str(pop.holder_pid) in row.text for row in rows), [r.text for r in rows]
    assert_clean_console(browser)
    assert_fetched_nothing(browser, page)
    screenshot(browser, "report-population")
    screenshot(browser, "report-population-dark", dark=True)
    assert time.monotonic() - started < 30


def test_hostile_names_stay_text_in_the_browser(browser: WebDriver, tmp_path: Path) -> None:
    """Process names and addresses come from the system: a page built from a document
    full of markup must show it as text and run nothing."""
    from selenium.common.exceptions import NoAlertPresentException

    done = tcpdoctor("doctor", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    document["meta"]["hostname"] = hostile
    document["close_wait_by_process"] = [
        {"pid": 1, "process": hostile, "count": 3, "top_peers": [[hostile, 3]]}
    ]
    document["limitations"] = [hostile]
    page = tmp_path / "hostile.html"
    page.write_text(html_report.render(document), encoding="utf-8")
    open_page(browser, page)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when no alert is open
    assert not elements(browser, "img") and not elements(browser, "script")
    assert hostile in elements(browser, "#close-wait tbody tr")[0].text
    assert browser.title == f"tcpdoctor report — {hostile}"
    assert_clean_console(browser)
    assert_fetched_nothing(browser, page)


def test_selenium_used_debians_driver_and_downloaded_nothing(browser: WebDriver) -> None:
    """Selenium Manager keeps what it fetches under ~/.cache/selenium: there is nothing."""
    assert browser.service.path == CHROMEDRIVER
    assert browser.capabilities["browserName"] in {"chrome", "chromium"}
    cache = Path(os.path.expanduser("~/.cache/selenium"))
    fetched = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert not fetched, fetched
