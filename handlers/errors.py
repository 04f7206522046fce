"""One error root. Each door maps these classes to its own answer (HTTP status, MQTT reply)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from handlers.views import View


class ErrorBody(View):
    """Every error, on every route: a sentence, a stable code, and the problems one by one."""

    detail: str = Field(description="what went wrong, for a human")
    code: str = Field(description="stable machine-readable code, e.g. invalid_schema, device_not_found")
    errors: list[dict[str, Any]] = Field(description='schema errors: [{"field", "message"}]; otherwise empty')
    # Keys some errors add (GatehouseError `extra`); absent from every other error.
    method: Literal["app", "email", "sms"] | None = Field(
        None, description="`two_factor_required` (and `two_factor_code_expired`) only: the user's 2FA method"
    )


class GatehouseError(Exception):
    """Root of every error a handler raises on purpose."""

    status = 400
    code = "error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: list[Any] | None = None,
        extra: dict[str, Any] | None = None,
        status_header: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.errors = errors or []
        self.extra = extra or {}  # more keys for the body; each must be an (optional) ErrorBody field
        # The Hardware API's `Status` header (InvalidSchema, DuplicateMacAddress); schema errors get
        # InvalidSchema without asking.
        self.status_header = status_header or ("InvalidSchema" if self.code == "invalid_schema" else None)

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, "errors": self.errors, **self.extra}


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
    """Too many requests; `retry_after` is the seconds until the next one can succeed."""

    status = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


def invalid(exc: ValidationError) -> InvalidPayload:
    """A pydantic ValidationError as the one error the doors know."""
    errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors(include_url=False)]
    detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
    return InvalidPayload(detail, code="invalid_schema", errors=errors)
