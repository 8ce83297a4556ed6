"""Headless Chromium for the tests that check what users see in a browser (optuna-dashboard, the MLflow UI):
both are React apps, so a page is read as its DOM after its scripts ran."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
# Chromium on a closed network, as root: without the background-networking flags it keeps dialling out.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--virtual-time-budget=10000",
)  # fmt: skip
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it: apt-get install chromium)"
)


def rendered_text(url: str, profile: Path) -> str:
    """The page's DOM as headless Chromium renders it, scripts run."""
    browser = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        dom, _ = browser.communicate(timeout=60)
    finally:
        if browser.poll() is None:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()
    return dom
