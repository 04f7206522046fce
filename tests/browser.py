"""Debian's Chromium driven by Playwright, for the console's tests (tests/integration/test_console_*).

`GATEHOUSE_CONSOLE_SCREENSHOTS=<dir>` makes `shoot` save each page there (docs/console/ is made so).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

from tests.support import PASSWORD

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google on this closed network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = os.environ.get("GATEHOUSE_CONSOLE_SCREENSHOTS")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser, *, phone: bool = False) -> Page:
    """A page of a fresh context (its own sessionStorage); `phone`: a 390 x 844 touch screen."""
    size = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 800}
    context = await browser.new_context(viewport=size, is_mobile=phone, has_touch=phone)
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # type: ignore[attr-defined]
    page.set_default_timeout(10_000)
    return page


async def log_in(page: Page, base: str, username: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/console/")
    await page.get_by_label("Email").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/console/#/devices")
    await page.get_by_role("heading", name="Devices").wait_for()


async def unlabelled(page: Page) -> list[str]:
    """Form controls without a label: every input, select and textarea must have one."""
    return await page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
             .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
             .map(el => el.outerHTML)"""
    )


async def overflows(page: Page) -> bool:
    """The page is wider than the screen (a phone would scroll sideways)."""
    return await page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth + 1")


async def shoot(page: Page, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)
