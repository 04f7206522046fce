"""One error root. Each door maps these classes to its own answer (HTTP status, MQTT reply)."""

from __future__ import annotations

from typing import Any


class GatehouseError(Exception):
    """Root of every error a handler raises on purpose."""

    status = 400
    code = "error"

    def __init__(self, detail: str, *, code: str | None = None, errors: list[Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, "errors": self.errors}


class InvalidPayload(GatehouseError):
    status = 400
    code = "invalid_payload"


class Unauthorized(GatehouseError):
    status = 401
    code = "unauthorized"


class Forbidden(GatehouseError):
    status = 403
    code = "forbidden"


class NotFound(GatehouseError):
    status = 404
    code = "not_found"


class Conflict(GatehouseError):
    status = 409
    code = "conflict"


class Gone(GatehouseError):
    status = 410
    code = "gone"


class UnsupportedMediaType(GatehouseError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(GatehouseError):
    status = 429
    code = "rate_limited"
