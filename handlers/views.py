"""The base of every response schema: what a handler's answer looks like on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema


class View(BaseModel):
    """A response body. A key the schema does not name is a bug (the document would not show it)."""

    model_config = ConfigDict(extra="forbid")


# Serialised with isoformat() as the handlers always have, so both doors send the same text.
Timestamp = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
