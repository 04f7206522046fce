"""The console's Gateway Lite and Locks pages in a real browser (Debian's Chromium via Playwright),
against a server that mails over SMTP (accounts are activated with the keys from the mail)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from tests.browser import chromium, log_in, new_page, shoot
from tests.gateway_lite import csv_bytes, gateway_rows, product, provider
from tests.iotlock import LockGateway, member
from tests.mqtt import Client
from tests.smtp import SmtpSink
from tests.support import PASSWORD, Api, Server

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


async def test_gateway_lite_import_acquire_by_qr_payload_fingerprint_and_release(
    mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession, browser: Any
) -> None:
    admin = Api(http, mail_server.url)
    await admin.login("admin@example.com")
    _, key = await provider(admin)
    product_id = await product(admin)
    rows = gateway_rows(2)

    # The gooee admin uploads the CSV from the page and watches the import complete.
    page = await new_page(browser)
    await log_in(page, mail_server.url, "admin@example.com")
    await page.get_by_role("link", name="Gateway Lite").click()
    await page.get_by_label("Product id").fill(product_id)
    await page.get_by_label("CSV file").set_input_files(
        {"name": "batch.csv", "mimeType": "text/csv", "buffer": csv_bytes(rows)}
    )
    await page.get_by_role("button", name="Upload import").click()
    imports = page.locator("h2:has-text('Imports') ~ div").last
    await expect(imports).to_contain_text("batch.csv")
    await expect(imports).to_contain_text("completed", timeout=30_000)  # progress follows by itself
    await expect(imports).to_contain_text("2/2")
    await expect(page.get_by_role("progressbar", name="batch.csv progress").first).to_have_attribute("value", "2")

    # A self-registered user acquires one by its QR payload, adds a fingerprint and releases it.
    email = f"lite-{rows[0][0]}@example.com"
    status, body = await admin.call("POST", "/integrations/gateway_lite/users/register/", {
        "integration_key": key, "first_name": "Gia", "last_name": "Lite", "email": email,
        "password": PASSWORD, "password_confirm": PASSWORD,
    }, auth=False)  # fmt: skip
    assert status == 201, body
    mail = (await smtpd.wait_for(email))[-1]
    token = re.search(r"\b(\d{6})\b", mail.body).group(1)  # type: ignore[union-attr]
    status, body = await admin.call("POST", "/integrations/gateway_lite/users/activate/", {"activation_token": token})
    assert status == 200, body
    user = await new_page(browser)
    await log_in(user, mail_server.url, email)
    await user.get_by_role("link", name="Gateway Lite").click()
    euid = rows[0][0]
    await user.get_by_label("EUID or QR payload").fill(json.dumps({"euid": euid}))
    await user.get_by_role("button", name="Acquire").click()
    await expect(user.locator("#status")).to_contain_text(f"Acquired {euid}")
    listed = user.locator("main table").first
    await expect(listed).to_contain_text(euid)
    await expect(listed).to_contain_text("customer_provisioned")
    await user.get_by_label("EUID or QR payload").fill("no-such-euid")
    await user.get_by_role("button", name="Acquire").click()
    await expect(user.get_by_role("alert")).not_to_be_empty()
    fingerprint = uuid.uuid4().hex  # fingerprints are unique server-wide: one of this test's own
    await user.get_by_label("Fingerprint (32 hex digits)").fill(fingerprint.upper())
    await user.get_by_label("Description").fill("front door")
    await user.get_by_role("button", name="Add fingerprint").click()
    await expect(user.locator("main")).to_contain_text(fingerprint)  # stored in lower case
    await shoot(user, "gateway-lite")
    await user.get_by_role("button", name="Release").click()
    await expect(user.locator("#status")).to_have_text(f"{euid} released.")
    await expect(user.locator("main")).not_to_contain_text("customer_provisioned")
    assert not page.js_errors and not user.js_errors  # type: ignore[attr-defined]


async def serve(gateway: LockGateway) -> None:
    """The lock gateway's firmware: every command answered ok (PINs kept)."""
    while True:
        try:
            channel, command_id, pack = await gateway.command(0.5)
        except queue.Empty:
            continue
        await gateway.answer(channel, command_id, pack)


async def test_locks_gateway_mailbox_pin_unlock_and_history(
    mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession, browser: Any
) -> None:
    lou = await member(mail_server, http, smtpd)
    page = await new_page(browser)
    await log_in(page, mail_server.url, lou.email)  # type: ignore[attr-defined]
    await page.get_by_role("link", name="Locks").click()
    await page.get_by_label("Gateway name").fill("porch")
    await page.get_by_label("Public key", exact=True).first.fill("pk-porch")
    await page.get_by_role("button", name="Add gateway").click()
    login = json.loads(await page.locator(".secret pre").inner_text())
    _, gateways = await lou.call("GET", "/iotlock/gateways")
    (info,) = gateways["results"]
    gateway = LockGateway({**info, "mqtt": login}, Client(login["client_id"], clean_session=False))
    assert await gateway.connect(mail_server, tls=True) == 0
    firmware = asyncio.create_task(serve(gateway))
    try:
        section = page.get_by_role("region", name="Gateway porch")
        # A device new to the page's scope joins its stream at the next re-read (within 5 s).
        await expect(section.locator(".badge")).to_have_text("online", timeout=15_000)
        await section.get_by_label("Mailbox name").fill("front")
        await section.get_by_label("Public key").fill("mpk-front")
        await section.get_by_role("button", name="Add mailbox").click()
        await expect(page.locator("#status")).to_have_text("Mailbox front added.")
        await page.get_by_label("New PIN (4-8 digits)").fill("4711")
        await page.get_by_role("button", name="Add PIN").click()
        await expect(page.locator("#status")).to_have_text("AUTH: acknowledged")
        assert gateway.pins and 4711 in next(iter(gateway.pins.values()))
        await page.get_by_role("button", name="Unlock").click()
        await expect(page.locator("#status")).to_have_text("UNLOCK: acknowledged")
        history = page.locator(".card table")
        await expect(history).to_contain_text("command: UNLOCK")
        await expect(history).to_contain_text("acknowledged")
        await shoot(page, "locks")
        # A PIN the lock refuses (schema): the API's message, readable.
        await page.get_by_label("New PIN (4-8 digits)").fill("12")
        await page.get_by_label("New PIN (4-8 digits)").evaluate("el => el.removeAttribute('pattern')")
        await page.get_by_role("button", name="Add PIN").click()
        await expect(page.get_by_role("alert")).to_contain_text("pin")
    finally:
        firmware.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await firmware
        gateway.client.close()
    assert not page.js_errors  # type: ignore[attr-defined]
