"""Debian's headless Chromium, driven by Playwright for Python (no browser download).

``.ci/run`` (through ``scripts/browser.sh``) installs ``chromium`` and ``chromium-driver`` with
apt-get. The flags keep Chromium off the closed network (no background connections, no
component updates) and give it a fake camera that the page may use without a prompt.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic",
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@dataclass
class PageLog:
    """What the page said: console errors, uncaught exceptions, and predict requests in flight."""
    errors: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    finished: int = 0

    def attach(self, page, watch: str = "/predict") -> None:
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("request", lambda r: self._start() if watch in r.url else None)
        page.on("requestfinished", lambda r: self._end() if watch in r.url else None)
        page.on("requestfailed", lambda r: self._end() if watch in r.url else None)

    def _start(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _end(self) -> None:
        self.in_flight -= 1
        self.finished += 1


def launch(playwright, profile: Path):
    """A persistent context on a fresh ``--user-data-dir`` (``profile``)."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Chromium is missing: `bash scripts/browser.sh` installs Debian's chromium and "
                           "chromium-driver (what .ci/run does)")
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1280, "height": 900})
