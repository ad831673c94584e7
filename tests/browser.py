"""A real headless Chromium for the HTML pages' tests: found through $CHROME or on PATH;
skipped with a reason where none is found, failed where $SBABENCH_REQUIRE_BROWSER=1 (CI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
REQUIRE = "SBABENCH_REQUIRE_BROWSER"
"""Set to 1 (as CI does) to fail, not skip, the browser tests where no browser is found."""
SCREENSHOTS = "SBABENCH_SCREENSHOTS"
"""A folder where the browser tests copy their screenshots (CI keeps it as an artefact)."""


def browser_path() -> str:
    """The browser to run, or a skip (a failure where CI requires one)."""
    found = os.environ.get("CHROME") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if found:
        return found
    reason = "no headless Chromium found (set $CHROME, or install it: apt-get install chromium)"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason}; {REQUIRE}=1 requires it")
    pytest.skip(reason)


def chrome(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the headless browser with its console logged to stderr."""
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=3000", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def console_lines(stderr: str) -> list[str]:
    """The page's console messages in the browser's log."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


def self_tested(page: Path, profile: Path) -> str:
    """The page's DOM after its `#selftest` ran in the browser: loaded with no console message,
    its script run to the end."""
    dumped = chrome(browser_path(), profile, "--dump-dom", page.resolve().as_uri() + "#selftest")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    console = console_lines(dumped.stderr)
    assert not console, console
    assert 'data-ready="yes"' in dumped.stdout  # the script ran to its end
    return dumped.stdout


def sorted_order(dom: str) -> list[str]:
    """The rows' `data-unit`s in the order the self-test's click left them."""
    found = re.search(r'data-sorted="([^"]*)"', dom)
    assert found is not None
    return found.group(1).split(",")


def screenshot(page: Path, profile: Path, name: str, size: str) -> None:
    """A screenshot of the page (`size`: "W,H"), checked to hold a picture, then kept."""
    shot = profile.parent / name
    taken = chrome(browser_path(), profile, f"--screenshot={shot}", f"--window-size={size}", page.resolve().as_uri())  # fmt: skip
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]
    keep_screenshot(shot)


def keep_screenshot(shot: Path) -> None:
    """Copy a screenshot to $SBABENCH_SCREENSHOTS, when set."""
    folder = os.environ.get(SCREENSHOTS)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(folder) / shot.name)
