"""Headless Chromium (Debian's chromium + chromium-driver) through Selenium, for the offline report pages.

`load_page(path, screenshot)` opens a local HTML file in a fresh profile and returns every URL the page
requested (Chrome DevTools Protocol Network events from the performance log) and every <img>'s
decode state. Chromium runs with background networking, component updates and sync off, and with
every host name mapped to nothing, so even a page that tried to reach the network could not.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM or not CHROMEDRIVER:
        return "Chromium is not installed (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@dataclass
class PageLoad:
    requests: list[str]  # every URL the page asked for (document, images, anything else)
    images: list[dict]  # {src, complete, naturalWidth, naturalHeight}
    title: str
    console: list[dict]


class Browser:
    """A headless Chromium session (a fresh profile, no network beyond what the pages ask of local servers)
    for pages that are used, not just loaded: `with Browser() as b: b.open(url); b.driver.find_element(…)`."""

    def __init__(self, width: int = 1400, height: int = 1000):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="kr-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--no-first-run", "--no-default-browser-check", "--disable-default-apps",
                         "--disable-extensions", "--metrics-recording-only", "--disable-breakpad",
                         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={self.profile}",
                         f"--window-size={width},{height}"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        # An explicit driver path: Selenium Manager (which would look for drivers online) is never asked.
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.get("about:blank")
        self.driver.get_log("performance")  # the browser's own start-up pages are not the page's requests
        self.seen: list[str] = []

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.quit()

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, url: str) -> None:
        self.driver.get(url)  # waits for the load event

    def requests(self) -> list[str]:
        """Every URL requested since the session began (documents, images, scripts, fetches, sockets)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
                params = message["params"]
                self.seen.append(params["request"]["url"] if "request" in params else params["url"])
        return list(self.seen)

    def images(self) -> list[dict]:
        return self.driver.execute_script(
            "return Array.from(document.images).map(i => ({src: i.currentSrc || i.src, complete: i.complete, "
            "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))")

    def screenshot(self, path: Path, full: bool = True) -> None:
        if full:
            size = self.driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            self.driver.set_window_size(min(max(self.width, size[0]), 4000), min(max(self.height, size[1]), 6000))
        self.driver.save_screenshot(str(path))
        if full:
            self.driver.set_window_size(self.width, self.height)


def load_page(page: Path, screenshot: Path | None = None, width: int = 1400, height: int = 1000) -> PageLoad:
    """Open a local HTML file; every URL it requested, its images' decode state, title and console."""
    with Browser(width, height) as browser:
        browser.open(page.resolve().as_uri())
        images = browser.images()
        requests = browser.requests()
        if screenshot is not None:
            browser.screenshot(screenshot)
        return PageLoad(requests, images, browser.driver.title, browser.driver.get_log("browser"))
