"""Resend's send API as the emulator serves it, idempotency keys included.

`POST /emails` with `Authorization: Bearer <key>`, a `User-Agent` and a JSON body →
200 `{"id"}`; errors are `{"statusCode", "name", "message"}` with Resend's error names,
so the official SDK (`resend.exceptions`) and mailmux's adapter read them as they
would Resend's. A 429 carries `retry-after` and the `ratelimit-*` headers.

Only what Resend certainly rejects is checked: a sender, 1 to 50 To recipients, a
subject, a body (html, text or a template), string headers, tags in Resend's alphabet,
and attachments with content (base64, or a list of byte values as the Python SDK sends
it) or a path. The request body is stored as received.

`Idempotency-Key` works as at Resend: the same key with the same body answers the
first request's id again and stores nothing; the same key with another body is a 409
`invalid_idempotent_request`. Keys are kept for the emulator's life, the newest
`MAX_IDEMPOTENCY_KEYS` of them. The id a key maps to is learned in `accepted`, which
the server calls right after `receive` with no await between them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route

MAX_IDEMPOTENCY_KEYS = 10_000
MAX_TO = 50
_JSON = "application/json"
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: Resend's error name for an injected fault, per status.
_FAULT_NAMES: Mapping[int, str] = {
    400: "validation_error",
    401: "missing_api_key",
    403: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    409: "concurrent_idempotent_requests",
    422: "validation_error",
    429: "rate_limit_exceeded",
    451: "security_error",
    500: "application_error",
}
#: One problem: (status, Resend's error name, message).
Problem = tuple[int, str, str]


class ResendShape:
    """The Resend shape; it remembers idempotency keys, so one instance per emulator."""

    routes: Sequence[Route] = (("POST", "/emails"),)

    def __init__(self) -> None:
        self._keys: OrderedDict[str, tuple[bytes, str]] = OrderedDict()  # key → (digest, id)
        self._max_keys = MAX_IDEMPOTENCY_KEYS
        self._pending: tuple[str, bytes] | None = None  # set by receive, used by accepted

    async def receive(self, request: web.Request) -> Received | web.Response:
        authorization = request.headers.get("Authorization", "").strip()
        if not authorization:
            return _error(401, "missing_api_key", "Missing API key in the authorization header.")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return _error(403, "invalid_api_key", "API key is invalid.")
        if not request.headers.get("User-Agent"):
            return _error(403, "validation_error", "The User-Agent header is required.")
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 256:
            return _error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "validation_error", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(422, "validation_error", "The request body must be a JSON object.")
        problem = _problem(body)
        if problem is not None:
            return _error(*problem)
        if idempotency_key is not None:
            digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
            known = self._keys.get(idempotency_key)
            if known is not None:
                if known[0] != digest:
                    message = "Same idempotency key used with a different request payload."
                    return _error(409, "invalid_idempotent_request", message)
                return _json(200, {"id": known[1]})
            self._pending = (idempotency_key, digest)
        return Received(body=raw, headers=_recorded_headers(request.headers, key))

    def accepted(self, message_id: str) -> web.Response:
        if self._pending is not None:
            key, digest = self._pending
            self._pending = None
            self._keys[key] = (digest, message_id)
            if len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        return _json(200, {"id": message_id})

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        default = "application_error" if status >= 500 else "validation_error"
        response = _error(status, _FAULT_NAMES.get(status, default), "Emulated fault.")
        if retry_after is not None:
            seconds = str(max(0, round(retry_after)))
            response.headers["retry-after"] = seconds
            if status == 429:
                response.headers["ratelimit-limit"] = "2"
                response.headers["ratelimit-remaining"] = "0"
                response.headers["ratelimit-reset"] = seconds
        return response


def _problem(body: dict[str, object]) -> Problem | None:
    """The first thing Resend would refuse in `body` (Resend names one error at a time)."""
    for field in ("from", "to", "subject"):
        if field not in body:
            return 422, "missing_required_field", f"Missing `{field}` field."
    if not _text(body["from"]):
        return 422, "validation_error", "Invalid `from` field."
    to = body["to"]
    recipients = [to] if isinstance(to, str) else to
    if not (isinstance(recipients, list) and recipients and all(map(_text, recipients))):
        return 422, "validation_error", "Invalid `to` field."
    if len(recipients) > MAX_TO:
        return 422, "validation_error", f"The `to` field takes at most {MAX_TO} addresses."
    if not isinstance(body["subject"], str):
        return 422, "validation_error", "Invalid `subject` field."
    for field in ("cc", "bcc", "reply_to"):
        value = body.get(field)
        if value is not None and not (
            _text(value) or (isinstance(value, list) and all(map(_text, value)))
        ):
            return 422, "validation_error", f"Invalid `{field}` field."
    template = body.get("template")
    if not (
        _text(body.get("html"))
        or _text(body.get("text"))
        or (isinstance(template, dict) and _text(template.get("id")))
    ):
        return 422, "validation_error", "Missing `html` or `text` field."
    headers = body.get("headers", {})
    if not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
        return 422, "validation_error", "Header values must be strings."
    return _tags_problem(body.get("tags", [])) or _attachments_problem(body.get("attachments", []))


def _tags_problem(tags: object) -> Problem | None:
    if not isinstance(tags, list):
        return 422, "validation_error", "Invalid `tags` field."
    for tag in tags:
        value = tag.get("value", "x") if isinstance(tag, dict) else None
        if not (isinstance(tag, dict) and _is_tag(tag.get("name")) and _is_tag(value)):
            message = "Tags should only contain ASCII letters, numbers, underscores, or dashes."
            return 422, "validation_error", message
    return None


def _attachments_problem(attachments: object) -> Problem | None:
    if not isinstance(attachments, list):
        return 422, "validation_error", "Invalid `attachments` field."
    for attachment in attachments:
        if not isinstance(attachment, dict):
            return 422, "invalid_attachment", "Attachment must be an object."
        content = attachment.get("content")
        if content is None:
            if not _text(attachment.get("path")):
                return 422, "invalid_attachment", "Attachment must have either a content or path."
        elif not (_text(attachment.get("filename")) and _is_content(content)):
            message = "Attachment content must be base64 or a list of bytes, with a filename."
            return 422, "invalid_attachment", message
    return None


def _is_content(content: object) -> bool:
    if isinstance(content, list):  # the Python SDK's `list(bytes)`
        return all(type(b) is int and 0 <= b <= 255 for b in content)
    if not isinstance(content, str):
        return False
    try:
        base64.b64decode(content, validate=True)
    except binascii.Error:
        return False
    return True


def _is_tag(value: object) -> bool:
    return isinstance(value, str) and _TAG.fullmatch(value) is not None


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"authorization": f"Bearer …{key[-4:]}" if len(key) > 8 else "Bearer …"}
    for name in ("content-type", "user-agent", "idempotency-key"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded


def _error(status: int, name: str, message: str) -> web.Response:
    return _json(status, {"statusCode": status, "name": name, "message": message})


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)
