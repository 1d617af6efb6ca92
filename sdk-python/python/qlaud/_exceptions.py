"""The exceptions the SDK raises.

Every error is a `QlaudError`. An answer with an error status is an
`ApiError` (with `status`, `type`, `message`, `code` and the raw `body`),
raised as the subclass for its status, so that callers can tell a spent
budget (`BudgetExceededError`) from a suspended key (`KeySuspendedError`),
a bad key (`AuthenticationError`) or a missing resource (`NotFoundError`).
No answer at all is an `ApiConnectionError` (`ApiTimeoutError` when the
client's timeout ran out).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "QlaudError",
    "ApiError",
    "BadRequestError",
    "AuthenticationError",
    "PaymentRequiredError",
    "BudgetExceededError",
    "KeySuspendedError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "RateLimitError",
    "InternalServerError",
    "ApiConnectionError",
    "ApiTimeoutError",
    "ValidationError",
]


class QlaudError(Exception):
    """Base of every error this SDK raises."""


class ApiError(QlaudError):
    """qlaud answered with an error status.

    Attributes:
        status: the HTTP status (for an error event in a stream, the status
            its error type stands for).
        type: the error's type (`invalid_request_error`, `not_found`, …).
        code: a finer reason when the API gives one (`spend_cap_reached`,
            `payment_failed`, `invalid_api_key`, `model_not_found`, …).
        message: what went wrong, in words.
        request_id: qlaud's id for the request, when the answer has one.
        body: the error answer as qlaud sent it.
    """

    status: int
    type: str
    code: str | None
    message: str
    request_id: str | None
    body: Any

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str,
        code: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.message}"


class BadRequestError(ApiError):
    """400, 413, 415 or 422: the request is malformed or refused as given."""


class AuthenticationError(ApiError):
    """401: the API key is missing, wrong, revoked or disabled."""


class PaymentRequiredError(ApiError):
    """402: the key may not spend now."""


class BudgetExceededError(PaymentRequiredError):
    """402: the key's spend cap for this period is reached."""


class KeySuspendedError(PaymentRequiredError):
    """402: the key is suspended because its customer's payment failed."""


class PermissionDeniedError(ApiError):
    """403: the key's scope does not allow this (an admin key is needed)."""


class NotFoundError(ApiError):
    """404: no such resource for this tenant (or no such model)."""


class ConflictError(ApiError):
    """409: the request conflicts with the resource's state."""


class RateLimitError(ApiError):
    """429: too many requests (after the client's retries)."""


class InternalServerError(ApiError):
    """5xx: qlaud or the provider behind it failed (after retries)."""


class ApiConnectionError(QlaudError):
    """No answer: qlaud could not be reached, or the connection broke."""


class ApiTimeoutError(ApiConnectionError):
    """No answer within the client's `timeout`."""


class ValidationError(QlaudError, ValueError):
    """An argument (caught before sending) or an answer does not fit the
    API's types."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    415: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
}

# qlaud's reasons for a 402, in every error shape's `code`.
_BY_PAYMENT_CODE: dict[str, type[ApiError]] = {
    "spend_cap_reached": BudgetExceededError,
    "payment_failed": KeySuspendedError,
}

# The status an error type in a stream stands for (Anthropic's and OpenAI's).
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _fields(body: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(type, code, message, request_id) from any of qlaud's error shapes."""
    if not isinstance(body, dict):
        return None, None, (str(body) if body else None), None
    err = body.get("error")
    if isinstance(err, dict):  # Anthropic's and OpenAI's shapes
        return err.get("type"), err.get("code"), err.get("message"), body.get("request_id")
    # qlaud's own shape (dropshot): {error_code, message, request_id}
    return None, body.get("error_code"), body.get("message"), body.get("request_id")


_TYPE_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _api_error(status: int, body: Any) -> ApiError:
    type_, code, message, request_id = _fields(body)
    if status == 0:
        status = _STATUS_OF_TYPE.get(type_ or "", 500)
    cls = _BY_STATUS.get(status, InternalServerError if status >= 500 else ApiError)
    if cls is PaymentRequiredError:
        cls = _BY_PAYMENT_CODE.get(code or "", PaymentRequiredError)
    return cls(
        message or f"qlaud answered {status}",
        status=status,
        type=type_ or code or _TYPE_OF_STATUS.get(status, "api_error"),
        code=code,
        request_id=request_id,
        body=body,
    )


def _make(kind: str, status: int, body: Any) -> QlaudError:
    """Called by the Rust bindings for every failure."""
    if kind in ("api", "stream"):
        return _api_error(status, body)
    if kind == "timeout":
        return ApiTimeoutError(str(body))
    if kind == "connection":
        return ApiConnectionError(str(body))
    return ValidationError(str(body))
