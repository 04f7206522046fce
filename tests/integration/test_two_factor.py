"""Two-factor authentication through the running server (spec/users.rst "Two-Factor Authentication"):
setup, verify, details, disable, and the login's second step, for the app (real TOTP codes computed
from the returned secret), email (codes read from the real SMTP server) and sms (codes read from the
outbox). Every test has users of its own, made with `gatehouse users create`.

TOTP codes are computed for explicit steps: the setup is verified with the current step `s`, later
codes use `s + 1` (the server accepts one step either way, so a step boundary passing mid-test
changes nothing) — an accepted step and every older one never work again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import pyotp

from tests.smtp import SmtpSink
from tests.support import PASSWORD, Api, Server, fetch, gatehouse, make_server, new_user

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Person:
    api: Api
    username: str
    id: str

    @property
    def base(self) -> str:
        return f"/users/{self.id}/two_factor"

    async def login(self, code: str | None = None, password: str = PASSWORD) -> tuple[int, Any]:
        body = {"username": self.username, "password": password}
        if code is not None:
            body["two_factor_auth_code"] = code
        return await self.api.call("POST", "/auth/login", body, auth=False)


async def person(server: Server, http: aiohttp.ClientSession, prefix: str) -> Person:
    """A new active customer user of this test's own, logged in."""
    api = await new_user(server, http, prefix)
    return Person(api, api.username, api.user_id)  # type: ignore[attr-defined]


def six_digits(text: str) -> str:
    found = re.findall(r"\b([0-9]{6})\b", text)
    assert len(found) == 1, text
    return found[0]


def step_now(secret: str) -> int:
    return pyotp.TOTP(secret).timecode(time.time())


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


async def enable_app(p: Person) -> tuple[str, int]:
    """Set up and verify the app method: (secret, the step whose code verified it)."""
    status, body = await p.api.call("POST", f"{p.base}/setup", {"two_factor_auth_method": "app"})
    assert status == 200, body
    secret = body["setup_details"]["secret"]
    step = step_now(secret)
    status, body = await p.api.call(
        "POST", f"{p.base}/verify", {"two_factor_auth_code": code_at(secret, step), "two_factor_auth_method": "app"}
    )
    assert status == 200, body
    return secret, step


async def sms_codes(server: Server, to: str) -> list[str]:
    """The codes texted to `to`, newest first, from the outbox (`gatehouse outbox --json`)."""
    done = await asyncio.to_thread(gatehouse, "outbox", "--json", "--to", to, data_dir=server.data_dir, env=server.env)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert all(r["channel"] == "sms" for r in rows), rows
    return [six_digits(r["body"]) for r in rows]


async def mailed_codes(smtpd: SmtpSink, to: str, count: int) -> list[str]:
    """The codes mailed to `to`, oldest first, once `count` have arrived."""
    mails = await smtpd.wait_for(to, count)
    assert len(mails) == count, [m.body for m in mails]
    return [six_digits(m.body) for m in mails]


# --- app ---------------------------------------------------------------------------------------


async def test_app_setup_verify_details_and_login(server: Server, http: aiohttp.ClientSession) -> None:
    p = await person(server, http, "tf-app")
    status, body = await p.api.call("POST", f"{p.base}/setup", {"two_factor_auth_method": "app"})
    assert status == 200, body
    assert body["detail"] == "Please setup the authenticator app (e.g Google Authenticator) on your phone."
    details = body["setup_details"]
    assert set(details) == {"issuer", "secret", "account_name", "provisioning_uri", "qr_code"}
    secret = details["secret"]
    assert details["issuer"] == "Gatehouse" and details["account_name"] == p.username
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)  # base32, 160 bits
    # The provisioning URI (Key Uri Format) carries the same secret and issuer.
    uri = urlsplit(details["provisioning_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/Gatehouse:{p.username}"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret] and query["issuer"] == ["Gatehouse"]
    # The QR code is a PNG data URI.
    header, _, data = details["qr_code"].partition(",")
    assert header == "data:image/png;base64"
    png = base64.b64decode(data, validate=True)
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width == height and width >= 100

    # Pending is not enabled: details say so, the password alone still logs in.
    status, body = await p.api.call("GET", p.base)
    assert (status, body["code"]) == (400, "two_factor_not_enabled")
    assert (await p.login())[0] == 200

    step = step_now(secret)
    status, body = await p.api.call(
        "POST", f"{p.base}/verify", {"two_factor_auth_code": "000000", "two_factor_auth_method": "app"}
    )
    if code_at(secret, step) != "000000":  # one chance in a million that 000000 is the real code
        assert (status, body["code"]) == (400, "invalid_code")
    status, body = await p.api.call(
        "POST", f"{p.base}/verify", {"two_factor_auth_code": code_at(secret, step), "two_factor_auth_method": "email"}
    )
    assert (status, body["code"]) == (400, "no_pending_setup")  # the pending setup is for the app
    status, body = await p.api.call(
        "POST", f"{p.base}/verify", {"two_factor_auth_code": code_at(secret, step), "two_factor_auth_method": "app"}
    )
    assert (status, body) == (200, {"detail": "Two-Factor Authentication was enabled successfully."})

    status, body = await p.api.call("GET", p.base)
    assert (status, body) == (200, {"two_factor_auth_method": "app", "config": {}})
    sql = "SELECT two_factor_method, two_factor_secret, two_factor_last_step FROM users WHERE username = ?"
    assert await fetch(server, sql, p.username) == [("app", secret, step)]
    status, body = await p.api.call("POST", f"{p.base}/setup", {"two_factor_auth_method": "email"})
    assert (status, body["code"]) == (400, "two_factor_already_enabled")

    # Login: the password alone is not enough any more; the answer names the method.
    status, body = await p.login()
    assert status == 401 and body["code"] == "two_factor_required" and body["method"] == "app", body
    assert p.api.last_headers["WWW-Authenticate"] == "Bearer"
    # The code that verified the setup was used: refused.
    status, body = await p.login(code_at(secret, step))
    assert (status, body["code"]) == (401, "invalid_two_factor_code")
    # A wrong password with a good code: refused before the code is looked at (and it stays unused).
    status, body = await p.login(code_at(secret, step + 1), password=PASSWORD + "x")
    assert (status, body["code"]) == (401, "invalid_credentials")
    before = await fetch(server, "SELECT last_login FROM users WHERE username = ?", p.username)
    status, tokens = await p.login(code_at(secret, step + 1))
    assert status == 200 and tokens["access_token"] and tokens["refresh_token"], tokens
    after = await fetch(server, "SELECT last_login FROM users WHERE username = ?", p.username)
    assert after[0][0] is not None and after != before
    fresh = Api(p.api.session, server.url)
    fresh.token = tokens["access_token"]
    status, me = await fresh.call("GET", "/me")
    assert (status, me["username"]) == (200, p.username)
    # The same code (or an older one) again: refused.
    for code in (code_at(secret, step + 1), code_at(secret, step - 1)):
        status, body = await p.login(code)
        assert (status, body["code"]) == (401, "invalid_two_factor_code")


async def test_one_totp_code_five_concurrent_logins_one_wins(server: Server, http: aiohttp.ClientSession) -> None:
    p = await person(server, http, "tf-race")
    secret, step = await enable_app(p)
    code = code_at(secret, step + 1)
    answers = await asyncio.gather(*(p.login(code) for _ in range(5)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 401, 401, 401, 401], answers
    assert all(body["code"] == "invalid_two_factor_code" for status, body in answers if status == 401)
    rows = await fetch(server, "SELECT two_factor_last_step FROM users WHERE username = ?", p.username)
    assert rows == [(step + 1,)]


async def test_disable_needs_a_valid_app_code(server: Server, http: aiohttp.ClientSession) -> None:
    p = await person(server, http, "tf-off")
    secret, step = await enable_app(p)
    status, body = await p.api.call("POST", f"{p.base}/disable", {})
    assert (status, body["code"]) == (400, "two_factor_code_required")
    wrong = next(c for c in ("123456", "654321") if c not in {code_at(secret, s) for s in range(step - 1, step + 3)})
    for code in (wrong, code_at(secret, step)):  # a wrong one, and the one already used
        status, body = await p.api.call("POST", f"{p.base}/disable", {"two_factor_auth_code": code})
        assert (status, body["code"]) == (400, "invalid_code")
    status, body = await p.api.call("GET", p.base)
    assert (status, body["two_factor_auth_method"]) == (200, "app")  # still on

    status, body = await p.api.call("POST", f"{p.base}/disable", {"two_factor_auth_code": code_at(secret, step + 1)})
    assert (status, body) == (200, {"detail": "'app' two-factor authentication has been disabled on your account"})
    status, body = await p.api.call("GET", p.base)
    assert (status, body["code"]) == (400, "two_factor_not_enabled")
    rows = await fetch(server, "SELECT two_factor_method, two_factor_secret FROM users WHERE username = ?", p.username)
    assert rows == [(None, "")]
    assert (await p.login())[0] == 200
    status, body = await p.api.call("POST", f"{p.base}/disable", {})
    assert (status, body["code"]) == (400, "two_factor_not_enabled")
    # It can be set up again, with a new secret whose current code works at once.
    again, _ = await enable_app(p)
    assert again != secret


# --- email ---------------------------------------------------------------------------------------


async def test_email_setup_login_and_disable(mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession) -> None:
    p = await person(mail_server, http, "tf-mail")
    status, body = await p.api.call("POST", f"{p.base}/setup", {"two_factor_auth_method": "email"})
    assert (status, body) == (
        200,
        {"detail": f"An email was sent with your authentication code to {p.username}.", "setup_details": {}},
    )
    (setup_code,) = await mailed_codes(smtpd, p.username, 1)
    assert "authentication code" in smtpd.to(p.username)[0].subject.lower()
    wrong = "111111" if setup_code != "111111" else "222222"
    status, body = await p.api.call(
        "POST", f"{p.base}/verify", {"two_factor_auth_code": wrong, "two_factor_auth_method": "email"}
    )
    assert (status, body["code"]) == (400, "invalid_code")
    verify = {"two_factor_auth_code": setup_code, "two_factor_auth_method": "email"}
    status, body = await p.api.call("POST", f"{p.base}/verify", {**verify, "two_factor_auth_method": "app"})
    assert (status, body["code"]) == (400, "no_pending_setup")
    status, body = await p.api.call("POST", f"{p.base}/verify", verify)
    assert (status, body) == (200, {"detail": "Two-Factor Authentication was enabled successfully."})
    status, body = await p.api.call("POST", f"{p.base}/verify", verify)
    assert (status, body["code"]) == (400, "two_factor_already_enabled")
    status, body = await p.api.call("GET", p.base)
    assert (status, body) == (200, {"two_factor_auth_method": "email", "config": {}})

    # Login without a code: 401 naming the method, and a fresh code is mailed.
    status, body = await p.login()
    assert (status, body["code"], body["method"]) == (401, "two_factor_required", "email")
    _, login_code = await mailed_codes(smtpd, p.username, 2)
    status, body = await p.login(setup_code)  # the setup's code is used up (and was for the setup)
    assert (status, body["code"]) == (401, "invalid_two_factor_code")
    status, body = await p.login(login_code)
    assert status == 200 and body["access_token"], body
    status, body = await p.login(login_code)  # one-time
    assert (status, body["code"]) == (401, "invalid_two_factor_code")

    # Disable: without a code one is mailed (400 two_factor_code_sent); then with it.
    status, body = await p.api.call("POST", f"{p.base}/disable", {})
    assert (status, body["code"]) == (400, "two_factor_code_sent")
    *_, disable_code = await mailed_codes(smtpd, p.username, 3)
    status, body = await p.api.call("POST", f"{p.base}/disable", {"two_factor_auth_code": login_code})
    assert (status, body["code"]) == (400, "invalid_code")
    status, body = await p.api.call("POST", f"{p.base}/disable", {"two_factor_auth_code": disable_code})
    assert (status, body) == (200, {"detail": "'email' two-factor authentication has been disabled on your account"})
    assert (await p.login())[0] == 200
    assert len(smtpd.to(p.username)) == 3  # no code mailed for a login without 2FA


# --- sms ---------------------------------------------------------------------------------------------


async def test_sms_setup_login_and_disable(server: Server, http: aiohttp.ClientSession) -> None:
    p = await person(server, http, "tf-sms")
    digits = f"1202{secrets.randbelow(10**7):07d}"
    typed = f"+{digits[0]}-{digits[1:4]}-{digits[4:7]}-{digits[7:]}"  # e.g. +1-202-555-0111
    to = f"+{digits}"  # what the provider gets (E.164)
    status, body = await p.api.call("POST", f"{p.base}/setup", {"two_factor_auth_method": "sms", "phone_number": typed})
    assert (status, body) == (
        200,
        {"detail": f"A SMS was sent with your authentication code to {typed}.", "setup_details": {}},
    )
    (setup_code,) = await sms_codes(server, to)
    status, body = await p.api.call(
        "POST", f"{p.base}/verify", {"two_factor_auth_code": setup_code, "two_factor_auth_method": "sms"}
    )
    assert status == 200, body
    status, body = await p.api.call("GET", p.base)
    assert (status, body) == (200, {"two_factor_auth_method": "sms", "config": {"phone_number": typed}})

    status, body = await p.login()
    assert (status, body["code"], body["method"]) == (401, "two_factor_required", "sms")
    login_code, _ = await sms_codes(server, to)
    status, body = await p.login(login_code)
    assert status == 200, body
    # A newer code voids the older one.
    assert (await p.login())[0] == 401
    newer, older, *_ = await sms_codes(server, to)
    if older != newer:
        assert (await p.login(older))[1]["code"] == "invalid_two_factor_code"
    assert (await p.login(newer))[0] == 200

    status, body = await p.api.call("POST", f"{p.base}/disable", {})
    assert (status, body["code"]) == (400, "two_factor_code_sent")
    disable_code = (await sms_codes(server, to))[0]
    status, body = await p.api.call("POST", f"{p.base}/disable", {"two_factor_auth_code": disable_code})
    assert (status, body) == (200, {"detail": "'sms' two-factor authentication has been disabled on your account"})


# --- who, and bad bodies -------------------------------------------------------------------------------


async def test_other_users_two_factor_is_not_found_and_admin_may_recover(
    server: Server, http: aiohttp.ClientSession, admin: Api
) -> None:
    alice = await person(server, http, "tf-alice")
    bob = await person(server, http, "tf-bob")
    await enable_app(alice)
    calls = [
        ("POST", f"{alice.base}/setup", {"two_factor_auth_method": "app"}),
        ("POST", f"{alice.base}/verify", {"two_factor_auth_code": "123456", "two_factor_auth_method": "app"}),
        ("GET", alice.base, None),
        ("POST", f"{alice.base}/disable", {"two_factor_auth_code": "123456"}),
    ]
    for method, path, body in calls:
        for where in (path, path.replace(alice.id, str(uuid.uuid4())), path.replace(alice.id, "not-a-uuid")):
            status, answer = await bob.api.call(method, where, body)
            assert (status, answer["code"]) == (404, "user_not_found"), (method, where, answer)
    # A gooee admin sees alice: reads her configuration, may not set it up for her, may disable it.
    status, body = await admin.call("GET", alice.base)
    assert (status, body) == (200, {"two_factor_auth_method": "app", "config": {}})
    for method, path, body in calls[:2]:
        status, answer = await admin.call(method, path, body)
        assert (status, answer["code"]) == (403, "permission_denied"), (method, path, answer)
    status, body = await admin.call("POST", f"{alice.base}/disable", {})
    assert (status, body) == (200, {"detail": "'app' two-factor authentication has been disabled on your account"})
    assert (await alice.login())[0] == 200
    # Unauthenticated: 401.
    status, body = await alice.api.call("GET", alice.base, auth=False)
    assert status == 401


async def test_bad_bodies_answer_400(server: Server, http: aiohttp.ClientSession) -> None:
    p = await person(server, http, "tf-bad")
    bad_setups: list[Any] = [
        {},
        {"two_factor_auth_method": "fax"},
        {"two_factor_auth_method": None},
        {"two_factor_auth_method": "sms"},  # no phone number
        {"two_factor_auth_method": "sms", "phone_number": ""},
        {"two_factor_auth_method": "sms", "phone_number": "12025550111"},  # no country code sign
        {"two_factor_auth_method": "sms", "phone_number": "+1202555011x"},
        {"two_factor_auth_method": "sms", "phone_number": "+123"},  # too few digits
        {"two_factor_auth_method": "sms", "phone_number": "+1234567890123456"},  # 16 digits
        {"two_factor_auth_method": "sms", "phone_number": "+1 202 555 0111 0000 0"},  # over 20 characters
        ["app"],
    ]
    for body in bad_setups:
        status, answer = await p.api.call("POST", f"{p.base}/setup", body)
        assert (status, answer["code"]) == (400, "invalid_schema"), (body, answer)
    json_type = {"Content-Type": "application/json"}
    status, answer = await p.api.call("POST", f"{p.base}/setup", data=b"{not json", headers=json_type)
    assert (status, answer["code"]) == (400, "invalid_json")

    bad_codes: list[Any] = [
        {},
        {"two_factor_auth_method": "app"},
        {"two_factor_auth_code": "123456"},  # the method is required
        {"two_factor_auth_code": "12345", "two_factor_auth_method": "app"},
        {"two_factor_auth_code": "1234567", "two_factor_auth_method": "app"},
        {"two_factor_auth_code": "abcdef", "two_factor_auth_method": "app"},
        {"two_factor_auth_code": 123456, "two_factor_auth_method": "app"},
        {"two_factor_auth_code": "123456", "two_factor_auth_method": "fax"},
    ]
    for body in bad_codes:
        status, answer = await p.api.call("POST", f"{p.base}/verify", body)
        assert (status, answer["code"]) == (400, "invalid_schema"), (body, answer)
    status, answer = await p.api.call(
        "POST", f"{p.base}/verify", {"two_factor_auth_code": "123456", "two_factor_auth_method": "app"}
    )
    assert (status, answer["code"]) == (400, "no_pending_setup")
    for code in ("", "12345", "abcdef", 123456):
        status, answer = await p.api.call("POST", f"{p.base}/disable", {"two_factor_auth_code": code})
        assert (status, answer["code"]) == (400, "invalid_schema"), (code, answer)
        status, answer = await p.login(code)  # type: ignore[arg-type]
        assert (status, answer["code"]) == (400, "invalid_schema"), (code, answer)
    status, answer = await p.api.call("POST", f"{p.base}/disable", {"two_factor_auth_code": "123456"})
    assert (status, answer["code"]) == (400, "two_factor_not_enabled")
    # Nothing was half-written.
    rows = await fetch(server, "SELECT two_factor_method FROM users WHERE username = ?", p.username)
    assert rows == [(None,)]
    assert (await p.login())[0] == 200


# --- rate limits (a server with the shipped budgets) -------------------------------------------------------


async def test_wrong_codes_are_rate_limited(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    server = make_server(
        tmp_path,
        GATEHOUSE_LIMITS__LOGIN__PER_ADDRESS="30 per 10 minutes",
        GATEHOUSE_LIMITS__TWO_FACTOR__PER_ADDRESS="30 per 10 minutes",
    )
    try:
        # Verify: five wrong codes, then even the right one is refused (the account is locked).
        p = await person(server, http, "tf-limit-verify")
        status, body = await p.api.call("POST", f"{p.base}/setup", {"two_factor_auth_method": "app"})
        assert status == 200, body
        secret = body["setup_details"]["secret"]
        real = {code_at(secret, s) for s in range(step_now(secret) - 1, step_now(secret) + 3)}
        wrong = [c for c in (f"{n:06d}" for n in range(100000, 100020)) if c not in real][:5]
        for code in wrong:
            status, body = await p.api.call(
                "POST", f"{p.base}/verify", {"two_factor_auth_code": code, "two_factor_auth_method": "app"}
            )
            assert (status, body["code"]) == (400, "invalid_code")
        good = {"two_factor_auth_code": code_at(secret, step_now(secret)), "two_factor_auth_method": "app"}
        status, body = await p.api.call("POST", f"{p.base}/verify", good)
        assert (status, body["code"]) == (429, "account_locked"), body
        assert int(p.api.last_headers["Retry-After"]) > 0

        # Login: five wrong codes after the right password, then the right code is refused too.
        q = await person(server, http, "tf-limit-login")
        secret, step = await enable_app(q)
        real = {code_at(secret, s) for s in range(step - 1, step + 3)}
        wrong = [c for c in (f"{n:06d}" for n in range(200000, 200020)) if c not in real][:5]
        for code in wrong:
            status, body = await q.login(code)
            assert (status, body["code"]) == (401, "invalid_two_factor_code")
        status, body = await q.login(code_at(secret, step + 1))
        assert (status, body["code"]) == (429, "account_locked"), body
        rows = await fetch(server, "SELECT two_factor_last_step FROM users WHERE username = ?", q.username)
        assert rows == [(step,)]  # the good code was not used up by the refused login
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-5000:]


async def test_login_answer_is_documented(server: Server, http: aiohttp.ClientSession) -> None:
    """/openapi.json documents the login's code field and the error body's `method`."""
    async with http.get(f"{server.url}/openapi.json") as resp:
        doc = await resp.json()
    schemas = doc["components"]["schemas"]
    assert "two_factor_auth_code" in schemas["LoginRequest"]["properties"]
    assert schemas["ErrorBody"]["properties"]["method"]["anyOf"][0]["enum"] == ["app", "email", "sms"]
    assert "method" not in schemas["ErrorBody"].get("required", [])
    for path in ("/users/{id}/two_factor/setup", "/users/{id}/two_factor/verify", "/users/{id}/two_factor/disable"):
        assert {"400", "401", "403", "404"} <= set(doc["paths"][path]["post"]["responses"]), path
    # Errors that do not name a method do not carry the key at all.
    status, body = await Api(http, server.url).call(
        "POST", "/auth/login", {"username": "x@example.com", "password": "y"}
    )
    assert status == 401 and set(body) == {"detail", "code", "errors"}
