"""A real headless Chromium for the HTML pages' tests: found through $CHROME or on PATH;
skipped with a reason where none is found, failed where $SBABENCH_REQUIRE_BROWSER=1 (CI)."""

from __future__ import annotations

import os
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


def keep_screenshot(shot: Path) -> None:
    """Copy a screenshot to $SBABENCH_SCREENSHOTS, when set."""
    folder = os.environ.get(SCREENSHOTS)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(folder) / shot.name)
