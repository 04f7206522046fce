"""The avatar check shared by registration and the users resource."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from handlers.avatars import MAX_BYTES, decode_avatar
from handlers.errors import InvalidPayload


def image(kind: str, size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, format=kind)
    return out.getvalue()


@pytest.mark.parametrize(("kind", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_accepted_formats(kind: str, mime: str) -> None:
    data = image(kind)
    assert decode_avatar(base64.b64encode(data).decode()) == (data, mime)


def test_data_urls_urlsafe_alphabet_and_missing_padding() -> None:
    data = image("PNG", (33, 17))
    plain = base64.b64encode(data).decode()
    assert decode_avatar(f"data:image/png;base64,{plain}") == (data, "image/png")
    assert decode_avatar(base64.urlsafe_b64encode(data).decode().rstrip("=")) == (data, "image/png")
    assert decode_avatar("\n".join(plain[i : i + 76] for i in range(0, len(plain), 76))) == (data, "image/png")


def test_nothing_is_none() -> None:
    assert decode_avatar(None) is None
    assert decode_avatar("") is None


def _refused(value: str) -> InvalidPayload:
    with pytest.raises(InvalidPayload) as caught:
        decode_avatar(value)
    assert caught.value.code == "invalid_avatar"
    assert [e["field"] for e in caught.value.errors] == ["avatar"]
    return caught.value


def test_refused() -> None:
    assert "GIF" in _refused(base64.b64encode(image("GIF")).decode()).detail
    assert "not base64" in _refused("not base64 at all!").detail
    assert "readable" in _refused(base64.b64encode(b"\x89PNG\r\n\x1a\n but not really").decode()).detail
    assert "readable" in _refused(base64.b64encode(image("PNG", (64, 64))[:-30]).decode()).detail
    _refused("data:image/png,plain-text")


def test_size_limits() -> None:
    too_big = b"\x00" * (MAX_BYTES + 1)
    assert "too large" in _refused(base64.b64encode(too_big).decode()).detail
    assert "pixels" in _refused(base64.b64encode(image("PNG", (4097, 1))).decode()).detail
    near = image("PNG", (4096, 1))
    assert decode_avatar(base64.b64encode(near).decode()) == (near, "image/png")
