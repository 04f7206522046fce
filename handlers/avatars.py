"""Avatars: a base64 PNG, JPEG or WebP image of at most 1 MiB, checked by decoding it with Pillow."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image

from handlers.errors import InvalidPayload

MAX_BYTES = 1024 * 1024
MAX_SIDE = 4096  # pixels; bounds the memory a decode may take
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_MAX_TEXT = 4 * (MAX_BYTES // 3 + 1) + 4


def _bad(why: str) -> InvalidPayload:
    message = f"avatar must be a base64 PNG, JPEG or WebP image of at most 1 MiB ({why})"
    return InvalidPayload(message, code="invalid_avatar", errors=[{"field": "avatar", "message": message}])


def decode_avatar(value: str | None) -> tuple[bytes, str] | None:
    """The image bytes and MIME type of a base64 avatar (plain or a `data:image/...;base64,` URL,
    standard or URL-safe alphabet, padding optional); None for None or "" (no avatar).
    400 `invalid_avatar` naming `avatar` otherwise. CPU-bound (it decodes the image): call it
    with `asyncio.to_thread` from a request handler."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise _bad("a data: URL must be base64")
    text = "".join(text.split())
    if len(text) > _MAX_TEXT:
        raise _bad("too large")
    try:
        altchars = b"-_" if ("-" in text or "_" in text) else None
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("not base64") from None
    if len(raw) > MAX_BYTES:
        raise _bad("too large")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()  # the file's structure and checksums (a cut-off PNG passes load() alone)
        with Image.open(io.BytesIO(raw)) as img:
            kind = img.format or ""
            width, height = img.size
            if kind not in MIME_TYPES:
                raise _bad(f"{kind or 'unknown'} images are not accepted")
            if width > MAX_SIDE or height > MAX_SIDE:
                raise _bad(f"larger than {MAX_SIDE}x{MAX_SIDE} pixels")
            img.load()  # decodes every pixel: a truncated or corrupt image fails here
    except InvalidPayload:
        raise
    except Exception:  # Pillow raises many kinds (OSError, SyntaxError, ValueError, DecompressionBombError...)
        raise _bad("not a readable image") from None
    return raw, MIME_TYPES[kind]
