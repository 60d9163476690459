"""Headless Chromium for the page tests: Debian's `chromium` driven through its own
`chromium-driver` by Selenium, with a fresh profile folder per session.

Without the networking flags Chromium reaches for the internet at start (component updates,
sync, field trials) and stalls on a machine that has none; none of it is needed to render our
pages, and the tests must send nothing off loopback anyway.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1280,1000",
)


def find(name: str, *alternatives: str) -> str:
    for candidate in (name, *alternatives):
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        f"{name} is not installed: make install installs Debian's chromium and chromium-driver"
    )


@contextmanager
def chromium(profile_dir: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = find("chromium", "chromium-browser")
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    # The browser's console, so a test can see a page's errors (a CSP refusal, a JS crash).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    service = Service(executable_path=find("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(
    driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 60
) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def console_errors(driver: WebDriver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
