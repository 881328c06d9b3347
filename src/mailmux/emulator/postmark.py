"""Postmark's `/email` as the emulator serves it.

`POST /email` with `X-Postmark-Server-Token` and a JSON body → 200
`{"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}`.
Errors are Postmark's `{"ErrorCode", "Message"}`: 401 with code 10 for a
missing token, 422 with code 409/402/403 for a body that is not a JSON
object, and 422 with code 300 for an invalid message. The route sits at the
host root because postmarker joins its endpoints with `urljoin`, which drops
any path prefix of its `root_api_url`.

Checked, cheaply, is what Postmark certainly refuses: a sender, at least one
recipient in To, Cc or Bcc (Postmark sends a message without To, and then
answers without `To`), at most 50 recipients, a text or HTML body, and the
type of each field it reads. Explicit `null`s are absent fields (postmarker
sends `"Cc": null` and friends). The request body is stored as received.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route

_JSON = "application/json"
_MAX_RECIPIENTS = 50
_STRING_FIELDS = (
    "From",
    "To",
    "Cc",
    "Bcc",
    "ReplyTo",
    "Subject",
    "Tag",
    "TextBody",
    "HtmlBody",
    "MessageStream",
    "TrackLinks",
)
#: Postmark's ErrorCode for an injected status: 401 is a token error (10), 503 is
#: maintenance (100), 422 an invalid request (300); others carry the status itself.
_FAULT_CODES = {401: 10, 422: 300, 503: 100}
#: The To of the request being answered ("" for none): `accepted` only gets the id, and
#: Postmark's answer echoes To. A context variable: each request runs in its own task.
_answer_to: contextvars.ContextVar[str] = contextvars.ContextVar("postmark_answer_to")


class PostmarkShape:
    """The Postmark shape; stateless apart from the per-request context variable."""

    routes: Sequence[Route] = (("POST", "/email"),)

    async def receive(self, request: web.Request) -> Received | web.Response:
        token = request.headers.get("X-Postmark-Server-Token", "").strip()
        if not token:
            return _error(
                401, 10, "No server token: send it in the X-Postmark-Server-Token header."
            )
        if request.content_type != _JSON:
            return _error(422, 409, "The request must be JSON (Content-Type: application/json).")
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(422, 402, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(422, 403, "The request body must be a JSON object, one message.")
        problem = _problem(body)
        if problem is not None:
            return _error(422, 300, problem)
        _answer_to.set(body.get("To") or "")
        return Received(body=raw, headers=_recorded_headers(request.headers, token))

    def accepted(self, message_id: str) -> web.Response:
        answer = {
            "SubmittedAt": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK",
        }
        to = _answer_to.get("")
        if to:  # Postmark leaves To out of the answer to a message without one
            answer = {"To": to, **answer}
        return web.Response(body=orjson.dumps(answer), content_type=_JSON)

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        code = _FAULT_CODES.get(status, status)
        response = _error(status, code, f"Emulated fault: HTTP {status}.")
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response


def _problem(body: dict[str, Any]) -> str | None:
    """The first reason Postmark would give for refusing `body` (code 300), or None."""
    for key in _STRING_FIELDS:
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            return f"'{key}' must be a string."
    if not body.get("From"):
        return "Invalid 'From' address: it is required."
    count = sum(_count(body.get(key)) for key in ("To", "Cc", "Bcc"))
    if not count:
        return "Zero recipients specified"
    if count > _MAX_RECIPIENTS:
        return f"{count} recipients; a message may have at most {_MAX_RECIPIENTS}."
    if not (body.get("TextBody") or body.get("HtmlBody")):
        return "Provide either a TextBody or an HtmlBody, or both."
    for key, check in (("Headers", _is_header), ("Attachments", _is_attachment)):
        items = body.get(key)
        if items is not None and not (isinstance(items, list) and all(map(check, items))):
            return f"'{key}' is malformed."
    metadata = body.get("Metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return "'Metadata' must be an object."
    return None


def _count(addresses: object) -> int:
    """Recipients in a comma-separated list; commas inside quoted names do not count."""
    if not isinstance(addresses, str) or not addresses.strip():
        return 0
    count, quoted, escaped = 1, False, False
    for char in addresses:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            count += 1
    return count


def _is_header(item: object) -> bool:
    return isinstance(item, dict) and isinstance(item.get("Name"), str) and bool(item["Name"])


def _is_attachment(item: object) -> bool:
    return (
        isinstance(item, dict)
        and all(isinstance(item.get(key), str) for key in ("Name", "Content", "ContentType"))
        and isinstance(item.get("ContentID") or "", str)
    )


def _recorded_headers(headers: Mapping[str, str], token: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the token is shown by its tail only."""
    shown = f"…{token[-4:]}" if len(token) > 8 else "…"
    recorded = {"x-postmark-server-token": shown}
    for name in ("content-type", "accept", "user-agent"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded


def _error(status: int, code: int, message: str) -> web.Response:
    body = orjson.dumps({"ErrorCode": code, "Message": message})
    return web.Response(status=status, body=body, content_type=_JSON)
