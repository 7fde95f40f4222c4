"""A real headless Chromium for the tests: Debian's ``chromium`` driven by Selenium through
Debian's ``chromium-driver``.

Nothing is downloaded: the browser and the driver are the system packages
(``apt-get install chromium chromium-driver``; ``.ci/run`` installs them). Without them the
calling test is skipped with a loud reason -- except when ``CI`` is ``"true"``: CI must run
the browser tests, so there the test fails instead (like tests/redis_util.py for Redis).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = ("/usr/bin/chromium", "chromium")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")
#: Seconds: page loads, waits for an element. A hung page fails the test, never the run.
TIMEOUT = 20

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
    "--lang=en-US",
]


def _missing(what: str) -> t.NoReturn:
    reason = (
        f"{what} NOT FOUND: the browser tests did NOT run. Install Debian's chromium and"
        " chromium-driver (apt-get install chromium chromium-driver) and the tests extra (selenium)."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " CI=true, so this is a failure, not a skip.", pytrace=False)
    pytest.skip(reason)


def _find(candidates: tuple[str, ...]) -> str | None:
    for c in candidates:
        found = c if os.path.isabs(c) and os.access(c, os.X_OK) else shutil.which(c)
        if found:
            return found
    return None


@contextmanager
def chromium() -> Iterator[t.Any]:
    """A Selenium WebDriver for a fresh headless Chromium (its own empty profile), quit afterwards."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("the selenium package")
    browser = _find(CHROMIUM)
    driver_binary = _find(CHROMEDRIVER)
    if browser is None:
        _missing("chromium")
    if driver_binary is None:
        _missing("chromedriver")
    profile = tempfile.mkdtemp(prefix="jws-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_binary), options=options)
    try:
        driver.set_page_load_timeout(TIMEOUT)
        driver.implicitly_wait(5)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


#: Window widths: a desktop and a phone (an iPhone's 375 CSS pixels).
DESKTOP, PHONE = 1280, 375


def screenshot(driver: t.Any, directory: Path, name: str, *, width: int = DESKTOP) -> Path:
    """Save the whole page as ``directory/name.png`` (the window ``width`` wide and grown to
    the page's height)."""
    driver.set_window_size(width, 1000)
    height = driver.execute_script(
        "var f = document.querySelector('footer') || document.body;"
        " return f.getBoundingClientRect().bottom + window.scrollY + 16"
        " + (window.outerHeight - window.innerHeight);"  # the window's own frame is not page
    )
    driver.set_window_size(width, max(700, min(int(height), 4000)))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for_title(driver: t.Any, *titles: str) -> str:
    """Wait (bounded) until the page that a click loads is there: its title starts with one
    of ``titles``. A click returns before the new page has loaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, TIMEOUT).until(lambda d: d.title.startswith(titles))
    return t.cast(str, driver.title)
