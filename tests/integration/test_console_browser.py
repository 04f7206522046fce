"""The web console in a real browser (Debian's Chromium, driven by Playwright) against the real
server: the issue's story end to end, 2FA at login, readable errors, labels and a phone screen."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pyotp
import pytest
from playwright.async_api import expect

from tests.browser import chromium, log_in, new_page, overflows, shoot, unlabelled
from tests.mqtt import Client
from tests.support import PASSWORD, Api, Server, new_user
from tests.tenants import unique

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


async def answer_commands(client: Client, username: str) -> None:
    """The firmware's loop: every command on commands/req/<id> is answered ok on commands/res/<id>."""
    prefix = f"devices/{username}/commands/req/"
    while True:
        try:
            msg = await client.receive(0.5)  # short: a cancelled wait's thread outlives the task
        except queue.Empty:
            continue
        if msg.topic.startswith(prefix):
            req_id = msg.topic[len(prefix) :]
            body = {"status": "ok", "relay": "on"}
            await client.publish(f"devices/{username}/commands/res/{req_id}", json.dumps(body), qos=1)


async def test_the_story_token_claim_live_telemetry_command_and_another_tenant(
    server: Server, http: aiohttp.ClientSession, browser: Any
) -> None:
    page = await new_page(browser)
    await page.goto(f"{server.url}/console/")
    await shoot(page, "login")
    await log_in(page, server.url, "alice@example.com")

    # Create a device, issue its token: shown once, with its claim payload as a QR code.
    name = unique("boiler")
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("Location").fill("Plant room")
    await page.get_by_role("button", name="Create device").click()
    await page.get_by_role("heading", name=name).wait_for()
    device_id = int(page.url.rsplit("/", 1)[1])
    await page.get_by_label("Notes").fill("bench unit")
    await page.get_by_role("button", name="Issue provisioning token").click()
    token = (await page.locator("#token-value").text_content() or "").strip()
    assert len(token) > 20
    qr = page.get_by_role("img", name="QR code of the claim payload")
    assert (await qr.get_attribute("src") or "").startswith("data:image/png;base64,")
    await page.get_by_role("button", name="Copy token").click()
    assert await page.evaluate("navigator.clipboard.readText()") == token
    await page.evaluate("window.notReloaded = true")

    # The simulated device claims the token, connects over TLS and answers commands.
    async with http.post(
        f"{server.url}/gateway/devices/claim", json={"token": token, "device_metadata": {"fw": "2.1.0"}}
    ) as resp:
        assert resp.status == 200
        claim = await resp.json()
    username = claim["mqtt"]["username"]
    device = Client()
    assert await device.connect(server.mqtts_port, username, claim["api_key"], ca=server.ca) == 0
    assert await device.subscribe(f"devices/{username}/commands/req/+") == 1
    answering = asyncio.create_task(answer_commands(device, username))
    try:
        # Live, without reloading: the claim, online, then each sample.
        claims = page.locator("h3:has-text('Last 50 claims') + div")
        await expect(claims).to_contain_text("2.1.0")
        await expect(claims).to_contain_text("http")
        await expect(page.locator("main .badge").first).to_have_text("online")
        for value in (21.5, 22.75):
            body = json.dumps({"temperature": value, "humidity": 40})
            assert await device.publish(f"devices/{username}/telemetry", body, qos=1)
            await expect(page.locator("[data-metric=temperature] .v")).to_have_text(str(value))
        await page.get_by_label("Value").select_option("temperature")
        await expect(page.locator("svg.chart polyline")).to_have_count(1)
        await expect(page.get_by_role("img", name="temperature: 2 samples")).to_be_visible()

        # A command sent from the page is answered by the device: acknowledged in the table.
        await page.get_by_label("Wait for the answer (seconds)").fill("10")
        await page.get_by_role("button", name="Send command").click()
        await expect(page.locator("td.cmd-status").first).to_have_text("ok")
        await expect(page.locator("#status")).to_contain_text(": ok")
        assert await page.evaluate("window.notReloaded") is True
        assert not await unlabelled(page)
        await shoot(page, "device")

        await page.get_by_role("link", name="Devices").click()
        row = page.locator(f"tr[data-id='{device_id}']")
        await expect(row.locator(".state")).to_have_text("online")
        await shoot(page, "devices")
        device.close()  # offline: the devices list follows without a reload
        await expect(row.locator(".state")).to_have_text("offline", timeout=15_000)
    finally:
        answering.cancel()
        device.close()

    # Bob, another tenant: none of it, and a readable message where he asks for it by id.
    other = await new_page(browser)
    await log_in(other, server.url, "bob@example.com")
    await expect(other.locator("main")).not_to_contain_text(name)
    await other.goto(f"{server.url}/console/#/devices/{device_id}")
    await expect(other.locator("#alert")).to_have_text(f"device {device_id} not found (device_not_found)")
    await expect(other.locator("main")).not_to_contain_text(name)
    assert not page.js_errors and not other.js_errors  # type: ignore[attr-defined]

    # The gooee admin reads the token's record (never its value), the credential and the samples.
    admin = await new_page(browser)
    await log_in(admin, server.url, "admin@example.com")
    await admin.get_by_role("link", name="Admin").click()
    await admin.get_by_label("Search device name or username").fill(name)
    await admin.get_by_role("button", name="Search").click()
    await expect(admin.locator("main table")).to_contain_text("bench unit")
    await expect(admin.locator("main table")).to_contain_text("used")
    assert token not in await admin.content()
    await shoot(admin, "admin")
    await admin.get_by_role("tab", name="Telemetry samples").click()
    await admin.get_by_label("Search device name or username").fill(username)
    await admin.get_by_role("button", name="Search").click()
    await expect(admin.locator("main table tbody tr")).to_have_count(2)
    await admin.get_by_role("tab", name="Credentials").click()
    await expect(admin.locator("main table")).to_contain_text(username)
    assert claim["api_key"] not in await admin.content()


async def test_login_with_two_factor_and_readable_errors(
    server: Server, http: aiohttp.ClientSession, browser: Any
) -> None:
    username = (await new_user(server, http, "tfa")).username  # type: ignore[attr-defined]
    page = await new_page(browser)

    # A wrong password: the API's message, readable, in the alert region.
    await page.goto(f"{server.url}/console/")
    await page.get_by_label("Email").fill(username)
    await page.get_by_label("Password").fill("wrong-password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text("(invalid_credentials)")

    # Two-factor set up from the profile page: scan the QR code (here: read the secret), enable.
    await log_in(page, server.url, username)
    await page.get_by_role("link", name="Profile").click()
    await page.get_by_role("button", name="Set up an authenticator app").click()
    qr = page.get_by_role("img", name=f"QR code for {username}")
    assert (await qr.get_attribute("src") or "").startswith("data:image/png;base64,")
    secret = (await page.locator(".secret code").text_content() or "").strip()
    await shoot(page, "profile")
    await page.get_by_label("Code from the app").fill("000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    await page.get_by_role("button", name="Enable").click()
    await expect(page.get_by_role("alert")).to_contain_text("(invalid_code)")
    await page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    await page.get_by_role("button", name="Enable").click()
    await expect(page.locator("#status")).to_have_text("Two-factor authentication enabled.")

    # Logging in now asks for the code, then lets the user in.
    await page.get_by_role("button", name=f"Log out {username}").click()
    await page.get_by_label("Email").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    code = page.get_by_label("Two-factor code")
    await expect(code).to_be_focused()
    # The enabling code's time step is used up (a code never works twice): the next step's code,
    # accepted as one step of clock drift.
    await code.fill(pyotp.TOTP(secret).at(time.time() + 30))
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/console/#/devices")
    assert not page.js_errors  # type: ignore[attr-defined]


async def test_every_page_is_labelled_keyboard_usable_and_fits_a_phone(server: Server, browser: Any) -> None:
    page = await new_page(browser, phone=True)
    await page.goto(f"{server.url}/console/")
    # Keyboard only: the login form has the focus, Tab moves through it, Enter submits.
    await expect(page.get_by_label("Email")).to_be_focused()
    await page.keyboard.type("admin@example.com")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/console/#/devices")
    for hash_, title in [
        ("devices", "Devices"), ("users", "Users"), ("gateway-lite", "Gateway Lite"), ("locks", "Locks"),
        ("admin", "Admin"), ("profile", "Profile"),
    ]:  # fmt: skip
        await page.goto(f"{server.url}/console/#/{hash_}")
        await page.get_by_role("heading", name=title, exact=True).wait_for()
        await page.locator("main[aria-busy=false]").wait_for()
        assert not await unlabelled(page), hash_
        assert not await overflows(page), f"{hash_} is wider than a phone"
        assert await page.get_by_role("alert").text_content() == "", hash_
        if hash_ == "devices":
            await shoot(page, "phone-devices")
    assert not page.js_errors  # type: ignore[attr-defined]


async def test_users_page_invites_finds_and_deactivates(
    server: Server, http: aiohttp.ClientSession, admin: Api, browser: Any
) -> None:
    target = await new_user(server, http, "leaver")
    page = await new_page(browser)
    await log_in(page, server.url, "admin@example.com")
    await page.get_by_role("link", name="Users").click()
    invited = f"{unique('invited')}@example.com"
    await page.get_by_label("Email").fill(invited)
    await page.get_by_label("First name").fill("Ina")
    await page.get_by_role("button", name="Invite").click()
    await expect(page.locator("#status")).to_have_text(f"Invitation mailed to {invited}.")
    await page.get_by_label("Search users").fill(invited)
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("main table tbody tr")).to_have_count(1)
    await expect(page.locator("main table tbody")).to_contain_text("pending")

    await page.get_by_label("Search users").fill(target.username)  # type: ignore[attr-defined]
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("main table tbody tr")).to_have_count(1)
    await shoot(page, "users")
    await page.get_by_role("button", name="Deactivate").click()
    await expect(page.locator("main table tbody")).to_contain_text("inactive")
    status, body = await target.call("POST", "/auth/login", {"username": target.username, "password": PASSWORD})  # type: ignore[attr-defined]
    assert status == 401 and body["code"] == "account_not_active", body
    # The same address again: the API's refusal, readable.
    await page.get_by_label("Email").fill(invited)
    await page.get_by_role("button", name="Invite").click()
    await expect(page.get_by_role("alert")).to_contain_text("(")
    assert not page.js_errors  # type: ignore[attr-defined]
