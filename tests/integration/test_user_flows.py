"""The mailed-key flows on the real server, with a real SMTP server reading the mail: invitation ->
registration -> login, resending an invitation, password recovery, finishing a username change.

Users to invite are written into the server's database by the test (the users API lives on another
branch); everything else goes through HTTP, and keys and links are read from the mails received.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from PIL import Image

from handlers import user_keys
from handlers.secrets import hash_password
from models.accounts import User, UserKey
from models.db import close_db, init_db
from models.tenancy import Customer, Partner, UserGroup
from tests.smtp import SmtpSink
from tests.support import PASSWORD, Api, Server, fetch, mail_env, make_server

NEW_PASSWORD = "N3w!passw0rd"
REGISTERED = "User registered successfully. You can login now."
RESENT = "A new invitation was sent to the user."
REQUESTED = "An email was sent with instructions to reset password."
CHANGED = "Password has been changed successfully."
KEY_RE = re.compile(r"Your activation key: (\S+)")
RESET_RE = re.compile(r"(\S+)/#/reset-password/([^/\s]+)/([^?\s/]+)\?(\S+)")


# --- setting up ------------------------------------------------------------------------------


@asynccontextmanager
async def server_db(server: Server) -> AsyncIterator[None]:
    """The server's database opened in the test process (the models work on it meanwhile)."""
    url = server.database_url
    if url.startswith("sqlite://"):
        url += "?busy_timeout=5000"
    db = await init_db(url, upgrade=False)
    try:
        yield
    finally:
        await close_db(db)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


async def make_user(
    server: Server,
    username: str,
    *,
    account_type: str = "customer",
    status: str = "inactive",
    password: str | None = None,
    partner: str | None = None,
    customer: str | None = None,
    permissions: list[str] | None = None,
) -> str:
    """A user written straight into the database: inactive (to be invited) or active with a password."""
    async with server_db(server):
        user = await User.create(
            username=username,
            account_type=account_type,
            account_status=status,
            password_hash=await hash_password(password) if password else "",
            first_name="Ivy",
            last_name="Invited",
            partner_id=partner,
            customer_id=customer,
        )
        if permissions is not None:
            group = await UserGroup.create(name=f"group of {username}", permissions=permissions)
            await user.user_groups.add(group)
        return str(user.id)


async def user_row(server: Server, user_id: str) -> dict[str, Any]:
    async with server_db(server):
        user = await User.get(id=user_id)
        return {
            "username": user.username,
            "status": user.account_status,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "phone_number": user.phone_number,
            "avatar": user.avatar,
            "avatar_type": user.avatar_type,
            "password_changed": user.password_changed,
            "pending_username": user.pending_username,
        }


async def age_keys(server: Server, user_id: str, purpose: str) -> None:
    """Every key of the user's for `purpose` expired a minute ago."""
    async with server_db(server):
        past = datetime.now(UTC) - timedelta(minutes=1)
        assert await UserKey.filter(user_id=user_id, purpose=purpose).update(expires_at=past)


async def outbox_count(server: Server, recipient: str) -> int:
    return (await fetch(server, "SELECT count(*) FROM outbox WHERE recipient = ?", recipient))[0][0]


def image(kind: str, size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=kind)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def registration(key: str, **override: Any) -> dict[str, Any]:
    body = {
        "activation_key": key,
        "first_name": "Bob",
        "last_name": "Bobsen",
        "phone_number": "18005467",
        "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD,
    }
    body.update(override)
    return {k: v for k, v in body.items() if v is not ...}


def assert_error(status: int, body: Any, want: int, code: str, field: str | None = None) -> None:
    assert status == want, body
    assert set(body) == {"detail", "code", "errors"} and body["code"] == code, body
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body


async def login_status(api: Api, username: str, password: str) -> int:
    status, _ = await api.call("POST", "/auth/login", {"username": username, "password": password}, auth=False)
    return status


@pytest.fixture
async def boss(mail_server: Server, http: aiohttp.ClientSession) -> Api:
    """The gooee administrator of the mail server."""
    api = Api(http, mail_server.url)
    await api.login("admin@example.com")
    return api


async def invite(api: Api, smtpd: SmtpSink, user_id: str, username: str, query: str = "") -> str:
    """Resend the user an invitation; the activation key of the mail it sent."""
    before = len(smtpd.to(username))
    status, body = await api.call("POST", f"/users/{user_id}/resend_invitation/{query}")
    assert (status, body) == (201, {"detail": RESENT}), body
    mail = (await smtpd.wait_for(username, before + 1))[-1]
    match = KEY_RE.search(mail.body)
    assert match, mail.body
    return match.group(1)


async def invited(server: Server, api: Api, smtpd: SmtpSink, name: str) -> tuple[str, str, str]:
    """A new inactive user, invited: (id, username, activation key)."""
    username = unique(name)
    user_id = await make_user(server, username)
    return user_id, username, await invite(api, smtpd, user_id, username)


async def reset_mail(api: Api, smtpd: SmtpSink, username: str, query: str = "") -> tuple[str, str, str, str]:
    """Ask for a reset link and read it from the mail: (portal, uidb64, token, query)."""
    before = len(smtpd.to(username))
    status, body = await api.call("POST", f"/users/password/request/change/{query}", {"username": username})
    assert (status, body) == (200, {"detail": REQUESTED}), body
    mail = (await smtpd.wait_for(username, before + 1))[-1]
    match = RESET_RE.search(mail.body)
    assert match, mail.body
    return match.group(1), match.group(2), match.group(3), match.group(4)


def change(uid: str, token: str, password: str = NEW_PASSWORD, confirm: str | None = None) -> dict[str, str]:
    return {"uidb64": uid, "token": token, "password": password, "password_confirm": confirm or password}


# --- invitation and registration -------------------------------------------------------------


async def test_invite_register_login(mail_server: Server, boss: Api, smtpd: SmtpSink) -> None:
    username = unique("ivy")
    user_id = await make_user(mail_server, username)
    key = await invite(boss, smtpd, user_id, username, "?mobile=true&scheme=myapp")
    mail = smtpd.to(username)[-1]
    assert mail.subject == "Your Gatehouse invitation"
    link = f"/#/user-registration/{key}/Ivy/Invited/{username}/?mobile=true&scheme=myapp"
    assert link in mail.body, mail.body
    assert (await user_row(mail_server, user_id))["status"] == "pending"
    assert await login_status(boss, username, NEW_PASSWORD) == 401

    png = image("PNG")
    status, body = await boss.call("POST", "/users/register", registration(key, avatar=b64(png)), auth=False)
    assert (status, body) == (201, {"detail": REGISTERED})
    row = await user_row(mail_server, user_id)
    assert row["status"] == "active" and row["password_changed"] is not None
    assert (row["first_name"], row["last_name"], row["phone_number"]) == ("Bob", "Bobsen", "18005467")
    assert (row["avatar"], row["avatar_type"]) == (png, "image/png")

    user = Api(boss.session, mail_server.url)
    await user.login(username, NEW_PASSWORD)
    status, me = await user.call("GET", "/me")
    assert status == 200 and me["account_status"] == "active" and me["first_name"] == "Bob"


async def test_register_refuses_bad_input_and_keeps_the_key(mail_server: Server, boss: Api, smtpd: SmtpSink) -> None:
    user_id, username, key = await invited(mail_server, boss, smtpd, "typo")
    rules = {
        "Sh0rt!a": "at least 8 characters",
        "NOLOWER1!": "lowercase",
        "noupper1!": "uppercase",
        "NoNumber!!": "number",
        "Has space1A": "use only letters, digits",
    }
    for password, rule in rules.items():
        status, body = await boss.call(
            "POST", "/users/register/", registration(key, password=password, password_confirm=password)
        )
        assert_error(status, body, 400, "weak_password", "password")
        assert rule in body["detail"], body
    # Every rule a password breaks is named at once.
    status, body = await boss.call(
        "POST", "/users/register/", registration(key, password="abc", password_confirm="abc")
    )
    assert_error(status, body, 400, "weak_password", "password")
    assert all(w in body["detail"] for w in ("8 characters", "uppercase", "number")), body

    status, body = await boss.call("POST", "/users/register/", registration(key, password_confirm=NEW_PASSWORD + "x"))
    assert_error(status, body, 400, "password_mismatch", "password_confirm")
    for field in ("first_name", "last_name", "password", "password_confirm", "activation_key"):
        status, body = await boss.call("POST", "/users/register/", registration(key, **{field: ...}))
        assert_error(status, body, 400, "invalid_schema", field)
    for field in ("first_name", "last_name"):
        status, body = await boss.call("POST", "/users/register/", registration(key, **{field: "   "}))
        assert_error(status, body, 400, "invalid_schema", field)
        status, body = await boss.call("POST", "/users/register/", registration(key, **{field: "x" * 31}))
        assert_error(status, body, 400, "invalid_schema", field)
    status, body = await boss.call("POST", "/users/register/", registration(key, phone_number="1" * 21))
    assert_error(status, body, 400, "invalid_schema", "phone_number")

    gif = image("GIF")
    truncated = image("PNG", (64, 64))[:-40]
    for avatar in ("image", b64(gif), b64(b"not an image at all"), b64(truncated), "data:image/png,xyz"):
        status, body = await boss.call("POST", "/users/register/", registration(key, avatar=avatar))
        assert_error(status, body, 400, "invalid_avatar", "avatar")

    status, body = await boss.call("POST", "/users/register/", registration("no-such-key"))
    assert_error(status, body, 400, "invalid_key", "activation_key")

    # None of that used up the key or touched the user.
    row = await user_row(mail_server, user_id)
    assert row["status"] == "pending" and row["first_name"] == "Ivy" and row["password_changed"] is None
    jpeg = image("JPEG")
    data_url = "data:image/jpeg;base64," + b64(jpeg)
    status, body = await boss.call("POST", "/users/register/", registration(key, avatar=data_url, phone_number=None))
    assert (status, body) == (201, {"detail": REGISTERED})
    row = await user_row(mail_server, user_id)
    assert (row["avatar"], row["avatar_type"], row["phone_number"]) == (jpeg, "image/jpeg", "")
    assert await login_status(boss, username, NEW_PASSWORD) == 200

    # A key works once.
    status, body = await boss.call(
        "POST", "/users/register/", registration(key, password="Other!pass9", password_confirm="Other!pass9")
    )
    assert_error(status, body, 400, "invalid_key", "activation_key")
    assert await login_status(boss, username, NEW_PASSWORD) == 200


async def test_expired_key_is_410_and_the_account_expired(mail_server: Server, boss: Api, smtpd: SmtpSink) -> None:
    user_id, username, key = await invited(mail_server, boss, smtpd, "late")
    await age_keys(mail_server, user_id, "activation")
    status, body = await boss.call("POST", "/users/register/", registration(key))
    assert_error(status, body, 410, "key_expired", "activation_key")
    assert (await user_row(mail_server, user_id))["status"] == "expired"
    assert await login_status(boss, username, NEW_PASSWORD) == 401
    # An expired account can be invited again; the new key works.
    key = await invite(boss, smtpd, user_id, username)
    assert (await user_row(mail_server, user_id))["status"] == "pending"
    status, body = await boss.call("POST", "/users/register/", registration(key))
    assert status == 201, body


async def test_resend_voids_the_old_key(mail_server: Server, boss: Api, smtpd: SmtpSink) -> None:
    user_id, username, first = await invited(mail_server, boss, smtpd, "twice")
    second = await invite(boss, smtpd, user_id, username)
    assert first != second
    status, body = await boss.call("POST", "/users/register/", registration(first))
    assert_error(status, body, 400, "invalid_key", "activation_key")
    status, body = await boss.call("POST", "/users/register/", registration(second))
    assert status == 201, body
    # Active now: no more invitations.
    status, body = await boss.call("POST", f"/users/{user_id}/resend_invitation")
    assert_error(status, body, 400, "already_active")
    assert len(smtpd.to(username)) == 2


async def test_resend_keeps_the_kind_of_the_first_invitation(mail_server: Server, boss: Api, smtpd: SmtpSink) -> None:
    """A user first invited from the portal (POST /users/?portal=true) gets a portal mail again: the link only."""
    username = unique("portal")
    user_id = await make_user(mail_server, username)
    async with server_db(mail_server):
        await user_keys.issue(await User.get(id=user_id), "activation", timedelta(days=7), {"portal": True})
    status, body = await boss.call("POST", f"/users/{user_id}/resend_invitation/")
    assert (status, body) == (201, {"detail": RESENT})
    (mail,) = await smtpd.wait_for(username)
    assert "Your activation key" not in mail.body and "/#/user-registration/" in mail.body, mail.body


async def test_resend_errors(mail_server: Server, boss: Api) -> None:
    for raw in (str(uuid.uuid4()), "not-a-uuid", "1"):
        status, body = await boss.call("POST", f"/users/{raw}/resend_invitation/")
        assert_error(status, body, 404, "user_not_found")
    status, body = await boss.call("POST", f"/users/{uuid.uuid4()}/resend_invitation/", auth=False)
    assert status == 401, body
    user_id = await make_user(mail_server, unique("q"))
    status, body = await boss.call("POST", f"/users/{user_id}/resend_invitation/?scheme=no%20spaces")
    assert_error(status, body, 400, "invalid_schema", "scheme")


async def test_resend_needs_the_permission_and_the_tenant(
    mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession
) -> None:
    async with server_db(mail_server):
        ours = await Partner.create(name="Ours")
        theirs = await Partner.create(name="Theirs")
        our_customer = await Customer.create(name="Our customer", partner=ours)
        their_customer = await Customer.create(name="Their customer", partner=theirs)
    boss = unique("boss")
    await make_user(mail_server, boss, account_type="partner", status="active", password=PASSWORD,
                    partner=str(ours.id), permissions=["manage_customer_users"])  # fmt: skip
    clerk = unique("clerk")
    await make_user(mail_server, clerk, account_type="customer", status="active", password=PASSWORD,
                    customer=str(our_customer.id), permissions=[])  # fmt: skip
    our_customer_user = await make_user(mail_server, unique("c1"), customer=str(our_customer.id))
    our_partner_user = await make_user(mail_server, unique("p1"), account_type="partner", partner=str(ours.id))
    their_user = await make_user(mail_server, unique("c2"), customer=str(their_customer.id))

    manager = Api(http, mail_server.url)
    await manager.login(boss)
    status, body = await manager.call("POST", f"/users/{our_customer_user}/resend_invitation/")
    assert (status, body) == (201, {"detail": RESENT})
    status, body = await manager.call("POST", f"/users/{our_partner_user}/resend_invitation/")
    assert_error(status, body, 403, "permission_denied")
    status, body = await manager.call("POST", f"/users/{their_user}/resend_invitation/")
    assert_error(status, body, 404, "user_not_found")

    plain = Api(http, mail_server.url)
    await plain.login(clerk)
    status, body = await plain.call("POST", f"/users/{our_customer_user}/resend_invitation/")
    assert_error(status, body, 403, "permission_denied")
    # Only the permitted request sent a mail, and it left only that user pending.
    assert (await user_row(mail_server, our_customer_user))["status"] == "pending"
    assert (await user_row(mail_server, our_partner_user))["status"] == "inactive"
    assert (await user_row(mail_server, their_user))["status"] == "inactive"


# --- password recovery -----------------------------------------------------------------------


async def test_reset_request_for_nobody_is_200_and_sends_nothing(
    mail_server: Server, boss: Api, smtpd: SmtpSink
) -> None:
    nobody = unique("nobody")
    waiting = unique("waiting")
    await make_user(mail_server, waiting, status="pending")
    for username in (nobody, waiting):
        status, body = await boss.call("POST", "/users/password/request/change/", {"username": username}, auth=False)
        assert (status, body) == (200, {"detail": REQUESTED})
    # Mail is queued before the answer: had anything been sent, its row would be there now.
    assert await outbox_count(mail_server, nobody) == 0
    assert await outbox_count(mail_server, waiting) == 0
    someone = unique("someone")
    await make_user(mail_server, someone, status="active", password=PASSWORD)
    await reset_mail(boss, smtpd, someone)
    assert await outbox_count(mail_server, someone) == 1
    assert smtpd.to(nobody) == [] and smtpd.to(waiting) == []


async def test_reset_link_works_once(
    mail_server: Server, boss: Api, smtpd: SmtpSink, http: aiohttp.ClientSession
) -> None:
    username = unique("forgetful")
    user_id = await make_user(mail_server, username, status="active", password=PASSWORD)
    other = unique("other")
    other_id = await make_user(mail_server, other, status="active", password=PASSWORD)
    user = Api(http, mail_server.url)
    tokens = await user.login(username)

    portal, uid, token, query = await reset_mail(boss, smtpd, username, "?mobile=true&scheme=myapp")
    assert portal.startswith("http://") and portal.endswith(f":{mail_server.http_port}"), portal  # http.public_url
    assert query == "mobile=true&scheme=myapp"
    assert base64.urlsafe_b64decode(uid + "=" * (-len(uid) % 4)).decode() == uuid.UUID(user_id).hex
    _, _, _, plain_query = await reset_mail(boss, smtpd, other)
    assert plain_query == "mobile=false"
    other_uid = base64.urlsafe_b64encode(uuid.UUID(other_id).hex.encode()).rstrip(b"=").decode()

    # The token is good only with its own uid; bad passwords are refused before it is used.
    for wrong in (other_uid, "garbage!", base64.urlsafe_b64encode(b"x").decode()):
        status, body = await boss.call("POST", "/users/password/change/", change(wrong, token))
        assert_error(status, body, 400, "invalid_key", "token")
    status, body = await boss.call("POST", "/users/password/change/", change(uid, token, confirm="Other!pass9"))
    assert_error(status, body, 400, "password_mismatch", "password_confirm")
    status, body = await boss.call("POST", "/users/password/change/", change(uid, token, "weakpass"))
    assert_error(status, body, 400, "weak_password", "password")
    status, body = await boss.call("POST", "/users/password/change/", change(uid, "no-such-token"))
    assert_error(status, body, 400, "invalid_key", "token")

    status, body = await boss.call("POST", "/users/password/change", change(uid, token), auth=False)
    assert (status, body) == (200, {"detail": CHANGED})
    assert await login_status(boss, username, PASSWORD) == 401
    assert await login_status(boss, username, NEW_PASSWORD) == 200
    assert await login_status(boss, other, PASSWORD) == 200  # the other user untouched
    status, body = await user.call("POST", "/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert_error(status, body, 401, "refresh_invalid")
    status, body = await boss.call("POST", "/users/password/change/", change(uid, token, "Third!pass9"))
    assert_error(status, body, 400, "invalid_key", "token")
    assert await login_status(boss, username, NEW_PASSWORD) == 200


async def test_a_later_password_change_voids_a_token(mail_server: Server, boss: Api, smtpd: SmtpSink) -> None:
    username = unique("changed")
    user_id = await make_user(mail_server, username, status="active", password=PASSWORD)
    _, uid, first, _ = await reset_mail(boss, smtpd, username)
    _, _, second, _ = await reset_mail(boss, smtpd, username)
    status, body = await boss.call("POST", "/users/password/change/", change(uid, first))
    assert_error(status, body, 400, "invalid_key", "token")  # a newer link replaced it
    # The password is changed by other means (any change sets password_changed): the link dies.
    async with server_db(mail_server):
        await User.filter(id=user_id).update(password_changed=datetime.now(UTC))
    status, body = await boss.call("POST", "/users/password/change/", change(uid, second))
    assert_error(status, body, 400, "invalid_key", "token")
    _, uid, third, _ = await reset_mail(boss, smtpd, username)
    status, body = await boss.call("POST", "/users/password/change/", change(uid, third))
    assert status == 200, body


async def test_expired_reset_token_is_410(mail_server: Server, boss: Api, smtpd: SmtpSink) -> None:
    username = unique("slow")
    user_id = await make_user(mail_server, username, status="active", password=PASSWORD)
    _, uid, token, _ = await reset_mail(boss, smtpd, username)
    await age_keys(mail_server, user_id, "password_reset")
    status, body = await boss.call("POST", "/users/password/change/", change(uid, token))
    assert_error(status, body, 410, "key_expired", "token")
    assert await login_status(boss, username, PASSWORD) == 200


async def test_registration_voids_reset_tokens(mail_server: Server, boss: Api, smtpd: SmtpSink) -> None:
    """A reset token issued before a registration (to an active account, later deactivated and invited
    again) dies with the password the registration sets."""
    username = unique("again")
    user_id = await make_user(mail_server, username, status="active", password=PASSWORD)
    _, uid, token, _ = await reset_mail(boss, smtpd, username)
    async with server_db(mail_server):
        await User.filter(id=user_id).update(account_status="inactive")
    key = await invite(boss, smtpd, user_id, username)
    status, body = await boss.call("POST", "/users/register/", registration(key))
    assert status == 201, body
    status, body = await boss.call("POST", "/users/password/change/", change(uid, token, "Other!pass9"))
    assert_error(status, body, 400, "invalid_key", "token")
    assert await login_status(boss, username, NEW_PASSWORD) == 200


# --- username change -------------------------------------------------------------------------


async def start_email_change(server: Server, user_id: str, new: str, status: str = "active") -> str:
    """What PATCH /users/(id)/ with a new username does (handlers/users.py): the key mailed to `new`."""
    async with server_db(server):
        user = await User.get(id=user_id)
        key = await user_keys.issue(user, "email_change", timedelta(days=7), {"username": new, "status": status})
        await User.filter(id=user_id).update(pending_username=new, account_status="transfer")
        return key


async def test_update_email(mail_server: Server, boss: Api, http: aiohttp.ClientSession) -> None:
    old, new = unique("old"), unique("new")
    user_id = await make_user(mail_server, old, status="active", password=PASSWORD)
    user = Api(http, mail_server.url)
    tokens = await user.login(old)
    key = await start_email_change(mail_server, user_id, new)

    status, body = await boss.call("POST", "/users/update_email", {"activation_key": "nope"}, auth=False)
    assert_error(status, body, 400, "invalid_key", "activation_key")
    status, body = await boss.call("POST", "/users/update_email/", {"activation_key": key}, auth=False)
    assert status == 200 and set(body) == {"detail"} and new in body["detail"], body
    row = await user_row(mail_server, user_id)
    assert (row["username"], row["pending_username"], row["status"]) == (new, None, "active")
    assert await login_status(boss, new, PASSWORD) == 200
    assert await login_status(boss, old, PASSWORD) == 401
    status, body = await user.call("POST", "/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert_error(status, body, 401, "refresh_invalid")
    status, body = await boss.call("POST", "/users/update_email", {"activation_key": key})
    assert_error(status, body, 400, "invalid_key", "activation_key")
    # The spec's example path is the same route.
    status, body = await boss.call("POST", "/users/email_change", {"activation_key": key})
    assert_error(status, body, 400, "invalid_key", "activation_key")


async def test_update_email_to_a_taken_name_is_409_and_keeps_the_key(mail_server: Server, boss: Api) -> None:
    me, wanted = unique("me"), unique("wanted")
    user_id = await make_user(mail_server, me, status="active", password=PASSWORD)
    key = await start_email_change(mail_server, user_id, wanted, status="inactive")
    squatter = await make_user(mail_server, wanted, status="active", password=PASSWORD)
    status, body = await boss.call("POST", "/users/update_email", {"activation_key": key})
    assert_error(status, body, 409, "duplicate_username", "username")
    row = await user_row(mail_server, user_id)
    assert (row["username"], row["pending_username"], row["status"]) == (me, wanted, "transfer")
    async with server_db(mail_server):
        await User.filter(id=squatter).update(username=unique("moved"))
    status, body = await boss.call("POST", "/users/update_email", {"activation_key": key})
    assert status == 200, body
    row = await user_row(mail_server, user_id)
    assert (row["username"], row["status"]) == (wanted, "inactive")  # back to the status it had


async def test_expired_email_change_is_410_and_dropped(mail_server: Server, boss: Api) -> None:
    me, new = unique("stay"), unique("never")
    user_id = await make_user(mail_server, me, status="active", password=PASSWORD)
    key = await start_email_change(mail_server, user_id, new)
    await age_keys(mail_server, user_id, "email_change")
    status, body = await boss.call("POST", "/users/update_email", {"activation_key": key})
    assert_error(status, body, 410, "key_expired", "activation_key")
    row = await user_row(mail_server, user_id)
    assert (row["username"], row["pending_username"], row["status"]) == (me, None, "active")
    assert await login_status(boss, me, PASSWORD) == 200


# --- concurrency -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory, smtpd: SmtpSink) -> Iterator[Server]:
    """Per-account budgets off too: ten requests with one key all reach the key, and ten logins with
    the ten racing passwords are all checked (five wrong ones would lock the account before the right one)."""
    flows = ("REGISTRATION", "PASSWORD_RESET", "ACTIVATION", "LOGIN")
    off = {f"GATEHOUSE_LIMITS__{f}__PER_ACCOUNT": "" for f in flows}
    srv = make_server(tmp_path_factory.mktemp("gatehouse-flows-roomy"), **mail_env(smtpd.port), **off)
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


async def race(api: Api, path: str, bodies: list[dict[str, Any]]) -> list[int]:
    answers = await asyncio.gather(*(api.call("POST", path, b, auth=False) for b in bodies))
    for status, body in answers:
        assert status in (200, 201) or body["code"] == "invalid_key", body
    return sorted(status for status, _ in answers)


async def test_ten_registrations_with_one_key_one_wins(
    roomy: Server, smtpd: SmtpSink, http: aiohttp.ClientSession
) -> None:
    admin = Api(http, roomy.url)
    await admin.login("admin@example.com")
    user_id, username, key = await invited(roomy, admin, smtpd, "racer")
    passwords = [f"Racer!{i}pass" for i in range(10)]
    statuses = await race(
        admin, "/users/register/", [registration(key, password=p, password_confirm=p) for p in passwords]
    )
    assert statuses == [201] + [400] * 9
    working = [p for p in passwords if await login_status(admin, username, p) == 200]
    assert len(working) == 1
    assert (await user_row(roomy, user_id))["status"] == "active"


async def test_ten_password_changes_with_one_token_one_wins(
    roomy: Server, smtpd: SmtpSink, http: aiohttp.ClientSession
) -> None:
    admin = Api(http, roomy.url)
    username = unique("racer")
    await make_user(roomy, username, status="active", password=PASSWORD)
    _, uid, token, _ = await reset_mail(admin, smtpd, username)
    passwords = [f"Racer!{i}pass" for i in range(10)]
    statuses = await race(admin, "/users/password/change/", [change(uid, token, p) for p in passwords])
    assert statuses == [200] + [400] * 9
    working = [p for p in passwords if await login_status(admin, username, p) == 200]
    assert len(working) == 1


async def test_ten_email_changes_with_one_key_one_wins(roomy: Server, http: aiohttp.ClientSession) -> None:
    api = Api(http, roomy.url)
    old, new = unique("old"), unique("new")
    user_id = await make_user(roomy, old, status="active", password=PASSWORD)
    key = await start_email_change(roomy, user_id, new)
    statuses = await race(api, "/users/update_email", [{"activation_key": key}] * 10)
    assert statuses == [200] + [400] * 9
    assert (await user_row(roomy, user_id))["username"] == new


# --- rate limits -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Small budgets; one trusted proxy hop, so each test plays its own client addresses."""
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-flows-limited"),
        GATEHOUSE_HTTP__TRUSTED_PROXY_HOPS="1",
        GATEHOUSE_LIMITS__PASSWORD_RESET__PER_ADDRESS="3 per hour",
        GATEHOUSE_LIMITS__PASSWORD_RESET__PER_ACCOUNT="2 per hour",
        GATEHOUSE_LIMITS__REGISTRATION__PER_ADDRESS="3 per hour",
        GATEHOUSE_LIMITS__REGISTRATION__PER_ACCOUNT="2 per hour",
        GATEHOUSE_LIMITS__ACTIVATION__PER_ADDRESS="3 per hour",
        GATEHOUSE_LIMITS__ACTIVATION__PER_ACCOUNT="2 per hour",
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


async def post_from(api: Api, address: str, path: str, body: dict[str, Any]) -> tuple[int, Any, int | None]:
    status, answer = await api.call("POST", path, body, headers={"X-Forwarded-For": address}, auth=False)
    retry = api.last_headers.get("Retry-After")
    return status, answer, int(retry) if retry is not None else None


async def assert_limited(api: Api, address: str, path: str, bodies: list[dict[str, Any]], first: int) -> None:
    """The first three from one address get `first`, the fourth 429 with Retry-After."""
    for body in bodies[:3]:
        status, answer, _ = await post_from(api, address, path, body)
        assert status == first, answer
    status, answer, retry = await post_from(api, address, path, bodies[3])
    assert_error(status, answer, 429, "rate_limited")
    assert retry is not None and 0 < retry <= 3600


async def test_password_reset_is_rate_limited(limited: Server, http: aiohttp.ClientSession) -> None:
    api = Api(http, limited.url)
    names = [{"username": unique("n")} for _ in range(4)]
    await assert_limited(api, "203.0.113.1", "/users/password/request/change/", names, 200)
    # Per username, whatever the address: two, then 429.
    body = {"username": unique("often")}
    for i in range(2):
        status, answer, _ = await post_from(api, f"203.0.113.{10 + i}", "/users/password/request/change/", body)
        assert status == 200, answer
    status, answer, retry = await post_from(api, "203.0.113.20", "/users/password/request/change/", body)
    assert_error(status, answer, 429, "rate_limited")
    assert retry and retry > 0
    changes = [change(f"uid{i}", "token") for i in range(4)]
    await assert_limited(api, "203.0.113.2", "/users/password/change/", changes, 400)


async def test_registration_and_update_email_are_rate_limited(limited: Server, http: aiohttp.ClientSession) -> None:
    api = Api(http, limited.url)
    keys = [registration(f"guess-{i}") for i in range(4)]
    await assert_limited(api, "203.0.113.30", "/users/register/", keys, 400)
    emails = [{"activation_key": f"guess-{i}"} for i in range(4)]
    await assert_limited(api, "203.0.113.31", "/users/update_email", emails, 400)
    # Per key, whatever the address.
    one_key = registration("guessed-often")
    for i in range(2):
        status, answer, _ = await post_from(api, f"203.0.113.{40 + i}", "/users/register/", one_key)
        assert status == 400, answer
    status, answer, _ = await post_from(api, "203.0.113.50", "/users/register/", one_key)
    assert_error(status, answer, 429, "rate_limited")
