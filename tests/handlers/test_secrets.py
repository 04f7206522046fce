"""Secrets: digests compared in constant time, access JWTs, argon2 passwords."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from handlers import secrets as s
from handlers.errors import Unauthorized

SECRET = "k" * 32


def test_new_secret_is_random_and_urlsafe() -> None:
    a, b = s.new_secret(), s.new_secret()
    assert a != b
    assert len(a) >= 43  # 32 bytes of entropy
    assert all(c.isalnum() or c in "-_" for c in a)


def test_digest_is_sha256_hex() -> None:
    assert s.digest("abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(s.digest("abc")) == 64


def test_digest_matches() -> None:
    stored = s.digest("the-key")
    assert s.digest_matches("the-key", stored) is True
    assert s.digest_matches("the-kex", stored) is False
    assert s.digest_matches("", stored) is False


@pytest.mark.parametrize("stored", [None, ""])
def test_digest_matches_nothing_stored(stored: str | None) -> None:
    assert s.digest_matches("anything", stored) is False
    # The digest of the empty string must not be treated as "no key".
    assert s.digest_matches("", stored) is False


def test_digest_matches_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = s.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(s.hmac, "compare_digest", spy)
    assert s.digest_matches("x", s.digest("x"))
    assert not s.digest_matches("x", None)
    assert len(calls) == 2  # the "nothing stored" path spends a comparison too


def test_access_token_round_trip() -> None:
    token, expires_in = s.issue_access_token(SECRET, "user-1", 15, account_type="customer")
    assert expires_in == 15 * 60
    claims = s.decode_access_token(SECRET, token)
    assert claims["sub"] == "user-1"
    assert claims["aud"] == "gatehouse"
    assert claims["typ"] == "access"
    assert claims["account_type"] == "customer"
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def _invalid(token: str, code: str = "token_invalid") -> None:
    with pytest.raises(Unauthorized) as caught:
        s.decode_access_token(SECRET, token)
    assert caught.value.status == 401
    assert caught.value.code == code


def _craft(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    return {"sub": "user-1", "aud": "gatehouse", "iat": now, "exp": now + timedelta(minutes=5), "typ": "access"} | (
        overrides
    )


def test_wrong_secret_refused() -> None:
    token, _ = s.issue_access_token("other" * 8, "user-1", 15)
    _invalid(token)


def test_wrong_audience_refused() -> None:
    _invalid(jwt.encode(_craft(aud="someone-else"), SECRET, algorithm="HS256"))


def test_missing_audience_refused() -> None:
    claims = _craft()
    del claims["aud"]
    _invalid(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_expired_refused() -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    _invalid(jwt.encode(_craft(exp=past), SECRET, algorithm="HS256"), "token_expired")
    token, _ = s.issue_access_token(SECRET, "user-1", -1)
    _invalid(token, "token_expired")


@pytest.mark.parametrize("typ", ["refresh", "", None])
def test_wrong_type_refused(typ: str | None) -> None:
    _invalid(jwt.encode(_craft(typ=typ), SECRET, algorithm="HS256"))


def test_other_algorithm_refused() -> None:
    _invalid(jwt.encode(_craft(), SECRET * 2, algorithm="HS512"))
    _invalid(jwt.encode(_craft(), None, algorithm="none"))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x"])
def test_garbage_refused(garbage: str) -> None:
    _invalid(garbage)


async def test_password_hash_and_verify() -> None:
    stored = await s.hash_password("Passw0rd!x")
    assert stored.startswith("$argon2")
    assert "Passw0rd!x" not in stored
    assert await s.verify_password("Passw0rd!x", stored) is True
    assert await s.verify_password("Passw0rd!y", stored) is False
    assert await s.verify_password("", stored) is False
    # Two hashes of one password differ (salted).
    assert await s.hash_password("Passw0rd!x") != stored


async def test_verify_password_nothing_or_garbage_stored() -> None:
    assert await s.verify_password("Passw0rd!x", "") is False
    assert await s.verify_password("Passw0rd!x", "not-a-hash") is False
