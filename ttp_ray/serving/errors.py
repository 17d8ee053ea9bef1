"""One error body for every 4xx/5xx the service returns, readable by both FastAPI and OpenAI clients.

Shape: `{"error": {"message", "type", "param", "code"}}` (what the `openai` client parses into its exceptions),
plus FastAPI's `detail` list for request-validation errors so per-field locations stay machine-readable.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse

from ttp_ray.errors import TTPValidationError

log = logging.getLogger("ray.serve")

_MAX_ECHO = 120  # characters of an invalid input echoed back in `detail`
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
          503: "service_unavailable", 504: "timeout"}


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a caller's lone surrogate echoed in an error cannot break the encoder."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(
    status: int,
    message: str,
    *,
    err_type: str | None = None,
    param: str | None = None,
    detail: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "error": {"message": message, "type": err_type or _TYPES.get(status, "server_error"), "param": param,
                  "code": status}
    }
    if detail is not None:
        body["detail"] = detail
    return AsciiJSONResponse(body, status_code=status)


def _loc_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("body", "candidates", 3)` -> `candidates[3]`: the field as the caller wrote it."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _compact(err: dict[str, Any]) -> dict[str, Any]:
    """A pydantic error made safe to echo: `ctx` may hold non-JSON objects, `input` may be huge or not JSON."""
    err = dict(err)
    if "ctx" in err:
        err["ctx"] = {k: str(v) for k, v in err["ctx"].items()}
    if "input" in err:  # repr: always JSON-safe (NaN, lone surrogates), truncated
        text = repr(err["input"])
        err["input"] = text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."
    return err


async def request_validation_handler(_: Request, exc: Exception) -> JSONResponse:
    """422 naming the first offending field in `message` (all of them in `detail`)."""
    assert isinstance(exc, RequestValidationError)
    errors = [_compact(err) for err in exc.errors()]
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _loc_name(first.get("loc", ("body",)))
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return error_response(
        422, f"{field}: {first.get('msg')}{more}", param=field, detail=jsonable_encoder(errors)
    )


async def internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: logged with its traceback here, a 500 without internals for the caller."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error ({type(exc).__name__}); see the replica's log")


async def ttp_validation_handler(_: Request, exc: Exception) -> JSONResponse:
    """`TTPValidationError` raised anywhere (ingress or a downstream deployment) is the caller's fault: 422."""
    # From another deployment it arrives as Ray's `RayTaskError` subclass; the original is its `cause`.
    cause = getattr(exc, "cause", exc)
    if not isinstance(cause, TTPValidationError):
        cause = exc
    param = getattr(cause, "parameter", None)
    message = cause.args[0] if cause.args else str(cause)
    return error_response(422, f"{param}: {message}" if param else message, param=param)


async def http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 400/404/405 (unknown path, wrong method, bad body) in the API's error JSON."""
    status = int(getattr(exc, "status_code", 500))
    detail = getattr(exc, "detail", None)
    response = error_response(status, str(detail) if detail else "error")
    for k, v in (getattr(exc, "headers", None) or {}).items():  # e.g. Allow on a 405
        response.headers[k] = v
    return response
