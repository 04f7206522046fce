"""SenML pack resolution: the RFC 8428 examples, base fields, and every rejection."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.errors import InvalidPayload
from handlers.senml import MAX_RECORDS, decode_pack, is_senml

NOW = 1_700_000_000.5
DEV = "urn:dev:ow:10e2073a01080063"


def _reject(pack: Any) -> InvalidPayload:
    with pytest.raises(InvalidPayload) as caught:
        decode_pack(pack, now=NOW)
    assert caught.value.code == "invalid_senml"
    return caught.value


# --- RFC 8428 §5.1 examples -------------------------------------------------------------------


def test_rfc_5_1_1_single_datapoint() -> None:
    pack = [{"n": DEV, "u": "Cel", "v": 23.1}]
    assert decode_pack(pack, now=NOW) == [{"n": DEV, "t": NOW, "u": "Cel", "v": 23.1}]


def test_rfc_5_1_2_multiple_datapoints() -> None:
    pack = [
        {"bn": DEV + ":", "n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "u": "A", "v": 1.2},
    ]
    assert decode_pack(pack, now=NOW) == [
        {"n": DEV + ":voltage", "t": NOW, "u": "V", "v": 120.1},
        {"n": DEV + ":current", "t": NOW, "u": "A", "v": 1.2},
    ]


def test_rfc_5_1_2_multiple_datapoints_with_base_time_unit_and_version() -> None:
    bn = "urn:dev:ow:10e2073a0108006:"
    pack = [
        {"bn": bn, "bt": 1.276020076001e09, "bu": "A", "bver": 5, "n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "t": -5, "v": 1.2},
        {"n": "current", "t": -4, "v": 1.3},
        {"n": "current", "t": -3, "v": 1.4},
        {"n": "current", "t": -2, "v": 1.5},
        {"n": "current", "t": -1, "v": 1.6},
        {"n": "current", "v": 1.7},
    ]
    assert decode_pack(pack, now=NOW) == [
        {"n": bn + "voltage", "u": "V", "v": 120.1, "t": 1.276020076001e09},
        {"n": bn + "current", "u": "A", "v": 1.2, "t": 1.276020071001e09},
        {"n": bn + "current", "u": "A", "v": 1.3, "t": 1.276020072001e09},
        {"n": bn + "current", "u": "A", "v": 1.4, "t": 1.276020073001e09},
        {"n": bn + "current", "u": "A", "v": 1.5, "t": 1.276020074001e09},
        {"n": bn + "current", "u": "A", "v": 1.6, "t": 1.276020075001e09},
        {"n": bn + "current", "u": "A", "v": 1.7, "t": 1.276020076001e09},
    ]


# §5.1.3 "Multiple Measurements"; §5.1.4 gives the same pack in resolved form.
RFC_5_1_3 = [
    {"bn": DEV, "bt": 1.320067464e09, "bu": "%RH", "v": 20},
    {"u": "lon", "v": 24.30621},
    {"u": "lat", "v": 60.07965},
    {"t": 60, "v": 20.3},
    {"u": "lon", "t": 60, "v": 24.30622},
    {"u": "lat", "t": 60, "v": 60.07965},
    {"t": 120, "v": 20.7},
    {"u": "lon", "t": 120, "v": 24.30623},
    {"u": "lat", "t": 120, "v": 60.07966},
    {"u": "%EL", "t": 150, "v": 98},
    {"t": 180, "v": 21.2},
    {"u": "lon", "t": 180, "v": 24.30628},
    {"u": "lat", "t": 180, "v": 60.07967},
]
RFC_5_1_4 = [
    {"n": DEV, "u": "%RH", "t": 1.320067464e09, "v": 20},
    {"n": DEV, "u": "lon", "t": 1.320067464e09, "v": 24.30621},
    {"n": DEV, "u": "lat", "t": 1.320067464e09, "v": 60.07965},
    {"n": DEV, "u": "%RH", "t": 1.320067524e09, "v": 20.3},
    {"n": DEV, "u": "lon", "t": 1.320067524e09, "v": 24.30622},
    {"n": DEV, "u": "lat", "t": 1.320067524e09, "v": 60.07965},
    {"n": DEV, "u": "%RH", "t": 1.320067584e09, "v": 20.7},
    {"n": DEV, "u": "lon", "t": 1.320067584e09, "v": 24.30623},
    {"n": DEV, "u": "lat", "t": 1.320067584e09, "v": 60.07966},
    {"n": DEV, "u": "%EL", "t": 1.320067614e09, "v": 98},
    {"n": DEV, "u": "%RH", "t": 1.320067644e09, "v": 21.2},
    {"n": DEV, "u": "lon", "t": 1.320067644e09, "v": 24.30628},
    {"n": DEV, "u": "lat", "t": 1.320067644e09, "v": 60.07967},
]


def test_rfc_5_1_3_multiple_measurements_resolve_to_5_1_4() -> None:
    assert decode_pack(RFC_5_1_3, now=NOW) == RFC_5_1_4


def test_rfc_5_1_4_resolved_data_is_unchanged_by_resolving_again() -> None:
    assert decode_pack(RFC_5_1_4, now=NOW) == RFC_5_1_4


def test_rfc_5_1_5_multiple_data_types() -> None:
    pack = [
        {"bn": DEV + ":", "n": "temp", "u": "Cel", "v": 23.1},
        {"n": "label", "vs": "Machine Room"},
        {"n": "open", "vb": False},
        {"n": "nfv-reader", "vd": "aGkgCg"},
    ]
    assert decode_pack(pack, now=NOW) == [
        {"n": DEV + ":temp", "t": NOW, "u": "Cel", "v": 23.1},
        {"n": DEV + ":label", "t": NOW, "vs": "Machine Room"},
        {"n": DEV + ":open", "t": NOW, "vb": False},
        {"n": DEV + ":nfv-reader", "t": NOW, "vd": "aGkgCg"},
    ]


# --- base fields, times, sums -----------------------------------------------------------------


def test_base_value_and_base_sum_are_added() -> None:
    pack = [
        {"bn": "meter/", "bv": 100, "bs": 1000, "n": "a", "v": 5, "s": 7},
        {"n": "b", "v": -2.5},
        {"n": "c", "s": 3, "ut": 60},
    ]
    assert decode_pack(pack, now=NOW) == [
        {"n": "meter/a", "t": NOW, "v": 105, "s": 1007},
        {"n": "meter/b", "t": NOW, "v": 97.5},
        {"n": "meter/c", "t": NOW, "s": 1003, "ut": 60},
    ]


def test_base_value_does_not_touch_string_values() -> None:
    assert decode_pack([{"bv": 10, "n": "x", "vs": "on"}], now=NOW) == [{"n": "x", "t": NOW, "vs": "on"}]


def test_relative_times_resolve_against_now() -> None:
    pack = [
        {"n": "a", "t": -10, "v": 1},
        {"n": "b", "t": 0, "v": 2},
        {"n": "c", "bt": -30, "t": 5, "v": 3},
        {"n": "d", "bt": 0, "t": 2**28 - 1, "v": 4},
        {"n": "e", "t": 2**28, "v": 5},
    ]
    assert [r["t"] for r in decode_pack(pack, now=NOW)] == [
        NOW - 10,
        NOW,
        NOW - 25,
        NOW + 2**28 - 1,
        float(2**28),
    ]


def test_absolute_time_is_a_float() -> None:
    (record,) = decode_pack([{"n": "a", "t": 1_600_000_000, "v": 1}], now=NOW)
    assert record["t"] == 1_600_000_000.0
    assert isinstance(record["t"], float)


def test_base_fields_carry_forward_until_changed() -> None:
    pack = [
        {"bn": "dev1/", "bt": 1_600_000_000, "bu": "Cel", "bv": 1, "n": "t0", "v": 1},
        {"n": "t1", "t": 5, "v": 2},
        {"bn": "dev2/", "n": "t2", "u": "K", "v": 3},
        {"bu": "%RH", "bt": 1_600_000_100, "bv": 0, "n": "h", "v": 4},
        {"n": "h", "t": 1, "v": 5},
    ]
    assert decode_pack(pack, now=NOW) == [
        {"n": "dev1/t0", "t": 1_600_000_000.0, "u": "Cel", "v": 2},
        {"n": "dev1/t1", "t": 1_600_000_005.0, "u": "Cel", "v": 3},
        {"n": "dev2/t2", "t": 1_600_000_000.0, "u": "K", "v": 4},
        {"n": "dev2/h", "t": 1_600_000_100.0, "u": "%RH", "v": 4},
        {"n": "dev2/h", "t": 1_600_000_101.0, "u": "%RH", "v": 5},
    ]


def test_no_unit_means_no_u_key() -> None:
    assert decode_pack([{"n": "a", "v": 1}], now=NOW) == [{"n": "a", "t": NOW, "v": 1}]


def test_unknown_plain_fields_are_ignored_and_bver_10_accepted() -> None:
    pack = [{"bver": 10, "n": "a", "v": 1, "foo": "bar", "x_y": 3}]
    assert decode_pack(pack, now=NOW) == [{"n": "a", "t": NOW, "v": 1}]


def test_max_records_is_accepted() -> None:
    resolved = decode_pack([{"n": "a", "v": i} for i in range(MAX_RECORDS)], now=NOW)
    assert len(resolved) == MAX_RECORDS
    assert resolved[-1] == {"n": "a", "t": NOW, "v": MAX_RECORDS - 1}


def test_is_senml() -> None:
    assert is_senml([]) is True
    assert is_senml([{"n": "a", "v": 1}]) is True
    assert is_senml({"temperature": 21.5}) is False
    assert is_senml("[]") is False
    assert is_senml(None) is False


# --- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize("pack", [{"n": "a", "v": 1}, "[]", None, 5, []])
def test_pack_must_be_a_non_empty_list(pack: Any) -> None:
    assert _reject(pack).detail == "SenML pack must be a non-empty JSON array of records"


def test_too_many_records() -> None:
    error = _reject([{"n": "a", "v": 1}] * (MAX_RECORDS + 1))
    assert error.detail == f"SenML pack has {MAX_RECORDS + 1} records; the limit is {MAX_RECORDS}"


def test_record_must_be_an_object() -> None:
    assert _reject([{"n": "a", "v": 1}, ["n", "b"]]).detail == "record 1: must be a JSON object, got list"


def test_missing_name() -> None:
    error = _reject([{"n": "a", "v": 1}, {"bn": "", "v": 2}])
    assert error.detail == "record 1: has no name (neither 'n' nor a base name 'bn')"


@pytest.mark.parametrize("name", ["has space", "-lead", ":lead", ".lead", "/lead", "_lead", "é", "a+b"])
def test_bad_name_characters(name: str) -> None:
    error = _reject([{"n": name, "v": 1}])
    assert error.detail == (
        f"record 0: name {name!r} must use only A-Z a-z 0-9 - : . / _ and start with a letter or digit"
    )


def test_name_rules_apply_to_the_resolved_name() -> None:
    assert decode_pack([{"bn": "a", "n": "_b", "v": 1}], now=NOW)[0]["n"] == "a_b"
    assert _reject([{"bn": "_a", "n": "b", "v": 1}]).detail.startswith("record 0: name '_ab' must use")


def test_no_value_or_sum() -> None:
    error = _reject([{"n": "a", "v": 1}, {"n": "b", "t": 5}])
    assert error.detail == "record 1: has no value or sum (one of v, vs, vb, vd or s is required)"


def test_base_fields_only_record_is_rejected() -> None:
    error = _reject([{"bn": "dev/", "bt": 1_600_000_000}, {"n": "a", "v": 1}])
    assert error.detail == "record 0: has no value or sum (one of v, vs, vb, vd or s is required)"


def test_two_values() -> None:
    error = _reject([{"n": "a", "v": 1, "vs": "one"}])
    assert error.detail == "record 0: has more than one value (v, vs); at most one of v, vs, vb, vd"


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        ({"n": 5, "v": 1}, "'n' must be a string, got int"),
        ({"bn": ["a"], "n": "b", "v": 1}, "'bn' must be a string, got list"),
        ({"n": "a", "u": 1, "v": 1}, "'u' must be a string, got int"),
        ({"bu": None, "n": "a", "v": 1}, "'bu' must be a string, got NoneType"),
        ({"n": "a", "vs": 1}, "'vs' must be a string, got int"),
        ({"n": "a", "vd": b"aGk"}, "'vd' must be a string, got bytes"),
        ({"n": "a", "v": "1"}, "'v' must be a number, got str"),
        ({"n": "a", "v": True}, "'v' must be a number, got bool"),
        ({"n": "a", "bv": False, "v": 1}, "'bv' must be a number, got bool"),
        ({"n": "a", "t": True, "v": 1}, "'t' must be a number, got bool"),
        ({"n": "a", "bt": "now", "v": 1}, "'bt' must be a number, got str"),
        ({"n": "a", "s": True}, "'s' must be a number, got bool"),
        ({"n": "a", "bs": None, "s": 1}, "'bs' must be a number, got NoneType"),
        ({"n": "a", "v": 1, "ut": "60"}, "'ut' must be a number, got str"),
        ({"n": "a", "vb": 1}, "'vb' must be true or false, got int"),
        ({"n": "a", "vb": "true"}, "'vb' must be true or false, got str"),
        ({"bver": "5", "n": "a", "v": 1}, "'bver' must be an integer, got str"),
        ({"bver": 5.0, "n": "a", "v": 1}, "'bver' must be an integer, got float"),
        ({"bver": True, "n": "a", "v": 1}, "'bver' must be an integer, got bool"),
    ],
)
def test_wrong_types(record: dict[str, Any], detail: str) -> None:
    assert _reject([{"n": "ok", "v": 0}, record]).detail == f"record 1: {detail}"


def test_unknown_must_understand_field() -> None:
    error = _reject([{"n": "a", "v": 1, "rt_": 5}])
    assert error.detail == "record 0: unknown must-understand field 'rt_'"


def test_bver_too_high() -> None:
    assert _reject([{"bver": 11, "n": "a", "v": 1}]).detail == (
        "record 0: SenML version 11 is not supported (at most 10)"
    )


@pytest.mark.parametrize("key", ["v", "t", "s", "bt", "bv", "bs", "ut"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers(key: str, bad: float) -> None:
    record = {"n": "a", "v": 1} | {key: bad}
    assert _reject([record]).detail == f"record 0: {key!r} must be a finite number, got {bad!r}"


def test_int_too_large_for_a_float() -> None:
    assert _reject([{"n": "a", "v": 10**400}]).detail == "record 0: 'v' is too large"


def test_resolved_value_overflowing_to_infinity() -> None:
    error = _reject([{"n": "a", "bv": 1e308, "v": 1e308}])
    assert error.detail == "record 0: 'resolved v' must be a finite number, got inf"
