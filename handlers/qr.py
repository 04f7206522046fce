"""QR codes for what a person scans with a phone (2FA setup, a device's claim payload)."""

from __future__ import annotations

import segno


def data_uri(text: str) -> str:
    """`text` as a QR code: a data:image/png;base64 URI, shown in an <img> as is."""
    return segno.make(text, error="m").png_data_uri(scale=4)
