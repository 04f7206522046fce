"""A user's display preferences (spec/users.rst, User Preferences): read by the user themself or
by whoever may manage them; PUT replaces all of them, PATCH some."""

from __future__ import annotations

import functools
import zoneinfo
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from handlers.errors import Forbidden
from handlers.principal import Principal
from handlers.user_rules import may_read_preferences, visible_user
from handlers.views import View

DEFAULTS: dict[str, Any] = {
    "date_format": "YYYY-MM-DD",
    "number_format": "en_US",
    "timezone": "UTC",
    "use_24": False,
    "use_local": True,
}
DateFormat = Literal[
    "YYYY-MM-DD", "DD/MM/YYYY", "MM/DD/YYYY", "DD.MM.YYYY", "DD-MM-YYYY", "YYYY/MM/DD", "DD MMM YYYY", "MMM DD, YYYY"
]
NumberFormat = Literal[
    "en_US", "en_GB", "en_CA", "en_AU", "en_IN", "fr_FR", "fr_CA", "de_DE", "de_CH", "es_ES", "es_MX", "it_IT",
    "nl_NL", "pt_BR", "pt_PT", "sv_SE", "da_DK", "nb_NO", "fi_FI", "pl_PL", "cs_CZ", "ru_RU", "tr_TR", "ja_JP",
    "ko_KR", "zh_CN", "zh_TW", "ar_SA", "he_IL", "hi_IN",
]  # fmt: skip


@functools.cache
def timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(value: str | None) -> str | None:
    if value is not None and value not in timezones():
        raise ValueError("must be an IANA time zone name such as UTC, Europe/Paris or US/Eastern")
    return value


class PutPreferences(BaseModel):
    """Every preference."""

    model_config = ConfigDict(extra="forbid")

    date_format: DateFormat
    number_format: NumberFormat
    timezone: str = Field(max_length=64, description="IANA time zone name")
    use_24: bool = Field(description="24-hour clock")
    use_local: bool = Field(description="show times in the viewer's local time zone")

    _tz = field_validator("timezone")(_timezone)


class PatchPreferences(BaseModel):
    """Some preferences; the rest keep their values."""

    model_config = ConfigDict(extra="forbid")

    date_format: DateFormat = Field(None)
    number_format: NumberFormat = Field(None)
    timezone: str = Field(None, max_length=64, description="IANA time zone name")
    use_24: bool = Field(None)
    use_local: bool = Field(None)

    _tz = field_validator("timezone")(_timezone)


class PreferencesView(View):
    date_format: str
    number_format: str
    timezone: str
    use_24: bool
    use_local: bool


def _view(stored: dict[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULTS, **{k: v for k, v in (stored or {}).items() if k in DEFAULTS}}


async def _user(principal: Principal, raw_id: str) -> Any:
    user = await visible_user(principal, raw_id)
    if not may_read_preferences(principal, user):
        raise Forbidden("you may not see or change this user's preferences", code="permission_denied")
    return user


async def get_preferences(principal: Principal, raw_id: str) -> dict[str, Any]:
    return _view((await _user(principal, raw_id)).preferences)


async def set_preferences(principal: Principal, raw_id: str, req: PutPreferences | PatchPreferences) -> dict[str, Any]:
    user = await _user(principal, raw_id)
    user.preferences = {**_view(user.preferences), **req.model_dump(exclude_unset=True)}
    await user.save(update_fields=["preferences", "modified"])
    return _view(user.preferences)
