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


def load_page(page: Path, screenshot: Path | None = None, width: int = 1400, height: int = 1000) -> PageLoad:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="kr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--no-default-browser-check", "--disable-default-apps",
                     "--disable-extensions", "--metrics-recording-only", "--disable-breakpad",
                     "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would look for drivers online) is never asked.
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get("about:blank")
        driver.get_log("performance")  # drop the start page's own requests
        driver.get(page.resolve().as_uri())
        driver.execute_script("return document.readyState")  # get() waits for the load event
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({src: i.currentSrc || i.src, complete: i.complete, "
            "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))")
        requests = []
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
                params = message["params"]
                requests.append(params["request"]["url"] if "request" in params else params["url"])
        if screenshot is not None:
            full = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            driver.set_window_size(min(max(width, full[0]), 4000), min(max(height, full[1]), 6000))
            driver.save_screenshot(str(screenshot))
        return PageLoad(requests, images, driver.title, driver.get_log("browser"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
