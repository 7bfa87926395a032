"""Open a local HTML file in headless Chromium (Debian's /usr/bin/chromium via Playwright) for report tests.

`.ci/run` installs Chromium; on a machine without it these tests fail loudly rather than skip.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class PageCheck:
    """What a page showed: console errors, uncaught exceptions, and counts of the selectors asked about."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("Chromium is not installed: `apt-get install -y chromium` (done by .ci/run)")
    return path


def open_page(html: Path, screenshot: Path, selectors: list[str], width: int = 1280) -> PageCheck:
    """Load `html` from disk, wait for it to settle, screenshot the full page, count each selector."""
    from playwright.sync_api import sync_playwright

    check = PageCheck()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: check.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: check.page_errors.append(str(e)))
            page.goto(html.resolve().as_uri())
            page.wait_for_load_state("load")
            page.screenshot(path=str(screenshot), full_page=True)
            for selector in selectors:
                check.counts[selector] = page.locator(selector).count()
                if check.counts[selector]:
                    check.texts[selector] = page.locator(selector).first.text_content() or ""
        finally:
            browser.close()
    return check
