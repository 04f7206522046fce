"""Secrets: random keys and tokens stored as SHA-256 digests, passwords with argon2, JWTs."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from handlers.errors import Unauthorized

_hasher = PasswordHasher()
JWT_ALGORITHM = "HS256"
JWT_AUDIENCE = "gatehouse"


def new_secret(nbytes: int = 32) -> str:
    """A high-entropy, URL-safe random string (API keys, provisioning and refresh tokens)."""
    return secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    # High-entropy secrets need no slow KDF: a SHA-256 digest keeps MQTT CONNECT fast.
    return hashlib.sha256(secret.encode()).hexdigest()


def digest_matches(secret: str, stored: str | None) -> bool:
    """Constant-time comparison of a presented secret with a stored digest."""
    if not stored:
        hmac.compare_digest("0" * 64, digest(secret))
        return False
    return hmac.compare_digest(digest(secret), stored)


def keyed_digest(key: str, purpose: str, secret: str) -> str:
    """HMAC-SHA-256 under the server's key: for secrets that may be short (a Gateway Lite's printed
    installation code), so a copy of the database alone does not allow guessing them offline."""
    return hmac.new(key.encode(), f"{purpose}:{secret}".encode(), hashlib.sha256).hexdigest()


def keyed_digest_matches(key: str, purpose: str, secret: str, stored: str | None) -> bool:
    """Constant-time comparison of a presented secret with a stored keyed digest."""
    presented = keyed_digest(key, purpose, secret)
    return hmac.compare_digest(presented, stored or "0" * 64) and bool(stored)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(new_secret())


async def verify_password(password: str, stored: str) -> bool:
    """Check a password against its argon2 hash. With no hash (an unknown user) the check is made
    against a dummy hash of the same parameters, so both cost the same time."""

    def check() -> bool:
        try:
            return _hasher.verify(stored or _dummy_hash(), password) and bool(stored)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def issue_access_token(secret: str, user_id: str, minutes: float, **claims: Any) -> tuple[str, int]:
    now = datetime.now(UTC)
    expires = now + timedelta(minutes=minutes)
    payload = {"sub": user_id, "aud": JWT_AUDIENCE, "iat": now, "exp": expires, "typ": "access", **claims}
    return jwt.encode(payload, secret, algorithm=JWT_ALGORITHM), int((expires - now).total_seconds())


def decode_access_token(secret: str, token: str, audience: str = JWT_AUDIENCE) -> dict[str, Any]:
    """The claims of an access token we signed for `audience` (users' tokens by default); 401 otherwise."""
    try:
        # A token we signed always has these; one without them (signed with a leaked or test secret)
        # is refused here rather than failing wherever the claim is read.
        claims = jwt.decode(
            token, secret, algorithms=[JWT_ALGORITHM], audience=audience, options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("access token expired", code="token_expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("invalid access token", code="token_invalid") from exc
    if claims.get("typ") != "access":
        raise Unauthorized("invalid access token", code="token_invalid")
    return claims


def _sealing_key(key: str, purpose: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"gatehouse {purpose}".encode())
    return AESGCM(derived.derive(key.encode()))


def seal_bytes(key: str, purpose: str, data: bytes) -> bytes:
    """`data` encrypted (AES-GCM, a fresh nonce in front) under a key derived from the server's key
    for `purpose`: for what the server must send on later and never keep in the clear."""
    nonce = secrets.token_bytes(12)
    return nonce + _sealing_key(key, purpose).encrypt(nonce, data, purpose.encode())


def unseal_bytes(key: str, purpose: str, sealed: bytes) -> bytes:
    """The data `seal_bytes` sealed; cryptography's InvalidTag if it was not sealed so (or altered)."""
    return _sealing_key(key, purpose).decrypt(sealed[:12], sealed[12:], purpose.encode())


def seal(key: str, purpose: str, secret: str) -> str:
    """A text secret sealed (`seal_bytes`), as URL-safe base64 (an IoTLock PIN, for its UNAUTH)."""
    return base64.urlsafe_b64encode(seal_bytes(key, purpose, secret.encode())).decode()


def unseal(key: str, purpose: str, token: str) -> str:
    return unseal_bytes(key, purpose, base64.urlsafe_b64decode(token)).decode()
