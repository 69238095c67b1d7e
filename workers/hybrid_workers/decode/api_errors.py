"""OpenAI-shaped JSON errors: `{"error": {"message", "type", "param", "code"}}`, a 4xx for bad input.

`ApiError` is raised anywhere in the HTTP layer; `install_error_handlers` maps it, pydantic and
FastAPI validation errors, `UserError` and unknown routes to that shape, so user input never yields a
500. Only genuine server faults answer 500 (type `server_error`), and they are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hybrid_workers.errors import UserError

log = logging.getLogger("hybrid_inference.decode")

# pydantic error type -> what to tell the user instead of pydantic's wording.
_FRIENDLY = {
    "missing": "required parameter is missing",
    "extra_forbidden": "unknown or unsupported parameter",
    "model_type": "must be a JSON object",
}
_MAX_REPR = 80


class ApiError(Exception):
    """An error answered as OpenAI's JSON error with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body: `{"error": {...}}`."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """This error as a response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 invalid_request_error."""
    return ApiError(400, message, param=param, code=code)


def from_validation_errors(errors: Sequence[Any]) -> ApiError:
    """A 400 naming the first offending parameter and its value, from pydantic's error list."""
    if not errors:
        return bad_request("invalid request")
    first = max(errors, key=lambda e: len(_param_path(e.get("loc", ())) or ""))  # the most specific
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return bad_request(f"request body is not valid JSON: {detail}".rstrip(": "), code="invalid_json")
    param = _param_path(first.get("loc", ()))
    reason = _FRIENDLY.get(kind, first.get("msg", "invalid value"))
    value = "" if kind in ("missing", "model_type") else f" (got {_short_repr(first.get('input'))})"
    where = param or "request body"
    return bad_request(f"{where}: {reason}{value}", param=param, code=kind or None)


def _param_path(loc: Sequence[Any]) -> str | None:
    """('body', 'messages', 0, 'role') -> 'messages[0].role'; drops pydantic's union-member tags."""
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_type_tag(str(part)):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or None


def _is_type_tag(part: str) -> bool:
    scalar = part in ("str", "int", "float", "bool", "dict", "none")
    return scalar or "[" in part or part.startswith(("function", "constrained-"))


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def install_error_handlers(app: FastAPI) -> None:
    """Route every error to OpenAI's shape (called once by the app factory)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return from_validation_errors(exc.errors()).response()

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return from_validation_errors(exc.errors()).response()

    @app.exception_handler(UserError)
    async def _user_error(_: Request, exc: UserError) -> JSONResponse:
        return bad_request(str(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, message, type=kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        message = f"internal server error ({type(exc).__name__}); see the decode worker's log"
        return ApiError(500, message, type="server_error").response()
