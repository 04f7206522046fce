"""Resolve SenML packs (RFC 8428, JSON representation) into plain records."""

from __future__ import annotations

import math
import re
from typing import Any

from handlers.errors import InvalidPayload

MAX_RECORDS = 1000
SENML_VERSION = 10  # the highest base version (bver) this decoder understands
RELATIVE_TIME_LIMIT = 2**28  # RFC 8428 §4.5.3: resolved times below this are relative to now

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
_STRINGS = ("bn", "bu", "n", "u", "vs", "vd")
_NUMBERS = ("bt", "bv", "bs", "t", "v", "s", "ut")
_VALUES = ("v", "vs", "vb", "vd")
_BASES = ("bn", "bt", "bu", "bv", "bs")


def is_senml(data: Any) -> bool:
    """A JSON array is a SenML pack; a JSON object is a plain reading."""
    return isinstance(data, list)


def decode_pack(pack: Any, *, now: float) -> list[dict[str, Any]]:
    """Resolve a SenML pack (RFC 8428) into resolved records.

    Raise InvalidPayload on anything the RFC rejects.
    """
    if not isinstance(pack, list) or not pack:
        raise InvalidPayload("SenML pack must be a non-empty JSON array of records", code="invalid_senml")
    if len(pack) > MAX_RECORDS:
        raise InvalidPayload(f"SenML pack has {len(pack)} records; the limit is {MAX_RECORDS}", code="invalid_senml")
    base: dict[str, Any] = {}
    resolved = []
    for index, record in enumerate(pack):
        if not isinstance(record, dict):
            raise _fail(index, f"must be a JSON object, got {type(record).__name__}")
        _check_fields(index, record)
        base.update({key: record[key] for key in _BASES if key in record})
        resolved.append(_resolve(index, record, base, now))
    return resolved


def _fail(index: int, message: str) -> InvalidPayload:
    return InvalidPayload(f"record {index}: {message}", code="invalid_senml")


def _check_number(index: int, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(index, f"{key!r} must be a number, got {type(value).__name__}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        raise _fail(index, f"{key!r} is too large") from None
    if not finite:
        raise _fail(index, f"{key!r} must be a finite number, got {value!r}")


def _check_fields(index: int, record: dict[str, Any]) -> None:
    for key in record:
        if isinstance(key, str) and key.endswith("_"):
            raise _fail(index, f"unknown must-understand field {key!r}")
    for key in _STRINGS:
        if key in record and not isinstance(record[key], str):
            raise _fail(index, f"{key!r} must be a string, got {type(record[key]).__name__}")
    for key in _NUMBERS:
        if key in record:
            _check_number(index, key, record[key])
    if "vb" in record and not isinstance(record["vb"], bool):
        raise _fail(index, f"'vb' must be true or false, got {type(record['vb']).__name__}")
    if "bver" in record:
        version = record["bver"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise _fail(index, f"'bver' must be an integer, got {type(version).__name__}")
        if version > SENML_VERSION:
            raise _fail(index, f"SenML version {version} is not supported (at most {SENML_VERSION})")
    values = [key for key in _VALUES if key in record]
    if len(values) > 1:
        raise _fail(index, f"has more than one value ({', '.join(values)}); at most one of v, vs, vb, vd")
    if not values and "s" not in record:
        raise _fail(index, "has no value or sum (one of v, vs, vb, vd or s is required)")


def _resolve(index: int, record: dict[str, Any], base: dict[str, Any], now: float) -> dict[str, Any]:
    name = base.get("bn", "") + record.get("n", "")
    if not name:
        raise _fail(index, "has no name (neither 'n' nor a base name 'bn')")
    if not _NAME.fullmatch(name):
        raise _fail(
            index,
            f"name {name!r} must use only A-Z a-z 0-9 - : . / _ and start with a letter or digit",
        )
    time = base.get("bt", 0) + record.get("t", 0)
    if time < RELATIVE_TIME_LIMIT:
        time += now
    out: dict[str, Any] = {"n": name, "t": float(time)}
    unit = record["u"] if "u" in record else base.get("bu")
    if unit:
        out["u"] = unit
    if "v" in record:
        out["v"] = base.get("bv", 0) + record["v"]
    for key in ("vs", "vb", "vd"):
        if key in record:
            out[key] = record[key]
    if "s" in record:
        out["s"] = base.get("bs", 0) + record["s"]
    if "ut" in record:
        out["ut"] = record["ut"]
    for key in ("t", "v", "s"):
        if key in out:
            _check_number(index, f"resolved {key}", out[key])
    return out


def encode_pack(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A pack to send, held to the rules a received one is: what we send decodes (InvalidPayload if not)."""
    decode_pack(records, now=0.0)
    return records
