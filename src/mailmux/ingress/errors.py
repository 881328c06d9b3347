"""JSON error bodies: a machine-readable code and a human message, always.

Routes answer with `error_response`. What aiohttp answers by itself — no
route for the path (404), a method the route does not take (405), a body
over the size limit (413) — arrives as a `web.HTTPException`, and
`from_http_exception` gives it the same shape; the server applies it to
every response (see `mailmux.ingress.server`).
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import hdrs, web

#: The error code for each status mailmux's server may answer without a route's say.
ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
    417: "expectation_failed",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}
# Headers of an HTTPException that describe its text body, which is replaced.
_BODY_HEADERS = frozenset(
    name.lower() for name in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING)
)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Sequence[dict[str, str]] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = list(details)
    body: dict[str, Any] = dict(extra or {})
    body["error"] = error
    return json_response(body, status, headers)


def error_code(status: int) -> str:
    """The code for a status: from ERROR_CODES, else its reason phrase in snake case."""
    code = ERROR_CODES.get(status)
    if code is not None:
        return code
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _http_exception_message(exc: web.HTTPException, request: web.BaseRequest) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no route for {request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"request body exceeds {request.client_max_size} bytes"
    return exc.reason


def from_http_exception(exc: web.HTTPException, request: web.BaseRequest) -> web.Response:
    """The JSON form of an aiohttp HTTP error (status >= 400); Allow and the like are kept."""
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
    return error_response(
        exc.status,
        error_code(exc.status),
        _http_exception_message(exc, request),
        headers=headers,
    )
