"""The headless browser the page and report tests drive: Debian's chromium through Playwright's Python
API (its own browser download is never used). A machine without /usr/bin/chromium or the playwright
package FAILS these tests, never skips them: `make test` installs chromium with apt-get."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> Iterator[Any]:
    """One launched browser (for a module-scoped fixture)."""
    assert CHROMIUM.is_file(), (f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
                                "(`make test` installs it; or `apt-get install -y chromium`)")
    from playwright.sync_api import sync_playwright  # a missing package fails here, never a skip

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watch(page: Any) -> list[str]:
    """The page's console errors and warnings and uncaught exceptions, as they come."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def broken_images(page: Any) -> list[str]:
    """The <img>s that did not load (after every one has finished), by src."""
    # polled from here: wait_for_function's in-page polling evaluates strings, which the page's CSP forbids
    for _ in range(200):
        if page.evaluate("Array.from(document.images).every(i => i.complete)"):
            break
        page.wait_for_timeout(50)
    return page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src.slice(0, 60))")
