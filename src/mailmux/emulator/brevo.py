"""Brevo's transactional email API as the emulator serves it.

`POST /v3/smtp/email` with the `api-key` header and a JSON body → 201
`{"messageId": "<…>"}` (202 when `scheduledAt` is set; `{"messageIds": […]}`,
one per version, when `messageVersions` is used). Errors are
`{"code", "message"}` with Brevo's codes (`unauthorized`, `missing_parameter`,
`invalid_parameter`, `not_enough_credits`, …); a 429 carries Brevo's
`x-sib-ratelimit-limit/-remaining/-reset` headers (reset: seconds until the
window resets) and, like Brevo, no Retry-After.

Checked, cheaply, as Brevo does: a sender (unless a template gives one),
recipients in `to` (unless `messageVersions`, each of which needs its own
`to`: Brevo takes no message or version with only cc or bcc), a subject and
an `htmlContent` or `textContent` (unless `templateId`), address syntax, and
attachment entries with a name for their content. The request body is stored as received. The
message id is the emulator's id as a Message-ID (`<id@emulator.brevo.invalid>`).

`receive` hands the answer's shape (single, versions, scheduled) to `accepted`
through a context variable: both run in the same request task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route

_JSON = "application/json"
_ID_DOMAIN = "emulator.brevo.invalid"
_RATE_LIMIT = "1000"  # Brevo's documented limit for /v3/smtp/email (per second)
#: Error codes Brevo uses for statuses the emulator injects.
_FAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    402: "not_enough_credits",
    403: "permission_denied",
    404: "document_not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "duplicate_request",
    422: "unprocessable_entity",
}
#: (versions, scheduled) of the request being answered: `versions` is None for a plain send.
_PLAN: ContextVar[tuple[int | None, bool]] = ContextVar("brevo_plan", default=(None, False))


class BrevoShape:
    """The Brevo shape; stateless apart from the per-request plan."""

    routes: Sequence[Route] = (("POST", "/v3/smtp/email"),)

    async def receive(self, request: web.Request) -> Received | web.Response:
        key = request.headers.get("api-key", "").strip()
        if not key:
            return _error(401, "unauthorized", "Key not found")
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "bad_request", "Input must be a valid JSON object")
        if not isinstance(body, dict):
            return _error(400, "bad_request", "Input must be a valid JSON object")
        problem = _problem(body)
        if problem is not None:
            return _error(400, *problem)
        versions = body.get("messageVersions")
        _PLAN.set((len(versions) if isinstance(versions, list) else None, "scheduledAt" in body))
        return Received(body=raw, headers=_recorded_headers(request.headers, key))

    def accepted(self, message_id: str) -> web.Response:
        versions, scheduled = _PLAN.get()
        _PLAN.set((None, False))
        answer: dict[str, Any]
        if versions is None:
            answer = {"messageId": f"<{message_id}@{_ID_DOMAIN}>"}
        else:
            answer = {"messageIds": [f"<{message_id}.{n}@{_ID_DOMAIN}>" for n in range(versions)]}
        return web.Response(
            status=202 if scheduled else 201, body=orjson.dumps(answer), content_type=_JSON
        )

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        text = f"{_phrase(status)} (emulated fault)"
        code = _FAULT_CODES.get(status)
        response = _error(status, code, text) if code else _json(status, {"message": text})
        if status == 429:
            response.headers["x-sib-ratelimit-limit"] = _RATE_LIMIT
            response.headers["x-sib-ratelimit-remaining"] = "0"
            reset = 1.0 if retry_after is None else retry_after
            response.headers["x-sib-ratelimit-reset"] = str(max(0, round(reset)))
        elif retry_after is not None:  # an injected 503 from a proxy in front of Brevo, say
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response


def _problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """The (code, message) Brevo answers 400 with; None when the request is acceptable."""
    templated = "templateId" in body
    sender = body.get("sender")
    if sender is None:
        if not templated:
            return "missing_parameter", "sender is missing"
    elif not isinstance(sender, dict) or not (_is_email(sender.get("email")) or "id" in sender):
        return "invalid_parameter", "sender is not valid"
    versions = body.get("messageVersions")
    if versions is None:
        to = body.get("to")
        if not (isinstance(to, list) and to):
            return "missing_parameter", "to is missing"
    elif not (
        isinstance(versions, list) and versions and all(isinstance(v, dict) for v in versions)
    ):
        return "invalid_parameter", "messageVersions must be a non-empty array of objects"
    for recipients in (body, *(versions or ())):
        problem = _recipients_problem(recipients, version=recipients is not body)
        if problem is not None:
            return problem
    reply_to = body.get("replyTo")
    if reply_to is not None and not _has_email(reply_to):
        return "invalid_parameter", "email is not valid in replyTo"
    if not templated:
        if not _non_empty_str(body.get("subject")):
            return "missing_parameter", "subject is missing"
        if not (_non_empty_str(body.get("htmlContent")) or _non_empty_str(body.get("textContent"))):
            return "missing_parameter", "htmlContent or textContent is missing"
    attachments = body.get("attachment")
    if attachments is not None:
        if not isinstance(attachments, list):
            return "invalid_parameter", "attachment must be an array"
        for item in attachments:
            if not isinstance(item, dict) or not ("url" in item or "content" in item):
                return "invalid_parameter", "attachment needs a url or a content"
            if "content" in item and not _non_empty_str(item.get("name")):
                return "missing_parameter", "attachment name is missing"
    return None


def _recipients_problem(fields: dict[str, Any], *, version: bool) -> tuple[str, str] | None:
    """Brevo's refusal of the to/cc/bcc of the body or of one message version."""
    where = " in messageVersions" if version else ""
    if version and not (isinstance(fields.get("to"), list) and fields["to"]):
        return "missing_parameter", f"to is missing{where}"
    for field in ("to", "cc", "bcc"):
        value = fields.get(field)
        if value is None:
            continue
        if not isinstance(value, list) or not all(_has_email(item) for item in value):
            return "invalid_parameter", f"email is not valid in {field}{where}"
    return None


def _non_empty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _is_email(value: object) -> bool:
    if not isinstance(value, str):
        return False
    local, at, domain = value.rpartition("@")
    return bool(local and at and "." in domain) and not any(c.isspace() for c in value)


def _has_email(item: object) -> bool:
    return isinstance(item, dict) and _is_email(item.get("email"))


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"api-key": f"…{key[-4:]}" if len(key) > 8 else "…"}
    for name in ("content-type", "user-agent"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, {"code": code, "message": message})


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
