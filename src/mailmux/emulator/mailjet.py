"""Mailjet's Send API v3.1 as the emulator serves it.

`POST /v3.1/send` with Basic auth (API key and secret; Mailjet also takes a
Bearer token) and `{"Messages": [...], "Globals", "SandboxMode"}`. Mailjet
checks each message on its own and answers per message:

- all valid → 200, each entry `{"Status": "success", "CustomID", "To", "Cc",
  "Bcc"}` with a `MessageUUID`, `MessageID` and `MessageHref` per recipient;
- some invalid → the valid ones are still sent, the invalid ones get
  `{"Status": "error", "Errors": [{ErrorIdentifier, ErrorCode, StatusCode,
  ErrorMessage, ErrorRelatedTo}]}`, and the HTTP status is the first error's
  (400, or 403 for a sender problem);
- a call-level problem (auth, broken JSON, no Messages) → a *global* error
  `{ErrorIdentifier, ErrorCode, StatusCode, ErrorMessage}`.

The emulator stores one record per request: the body as received when every
message is valid (no re-encoding on the hot path), else the body with only
the valid messages. `SandboxMode: true` validates and answers without storing,
as Mailjet validates without delivering. Ids: the first recipient of the first
stored message gets the emulator's id as its `MessageUUID` (so the id a client
records is the id `/_emulator/messages` lists); other recipients get
`<id>-<n>`; `MessageID`s are distinct 64-bit numbers. Checks are Mailjet's
documented ones, kept cheap, on each message with `Globals` applied to it:
required From and a non-empty To (Mailjet takes no message without To, so
a bcc-only message must be one message per recipient), address syntax, a
body (TextPart, HTMLPart or TemplateID), recipient and array limits,
attachment fields.

`receive` hands the per-message outcome to `accepted` through a context
variable: both run in the same request task, so concurrent requests never see
each other's.
"""

from __future__ import annotations

import base64
import itertools
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route

_JSON = "application/json"
_MAX_ITEMS = 50
_FIRST_MESSAGE_ID = 288_230_376_151_711_744  # 2**58: as long as Mailjet's real ids
_CONTENT_FIELDS = ("TextPart", "HTMLPart", "TemplateID")
_ATTACHMENT_FIELDS = ("Filename", "ContentType", "Base64Content")

Error = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Reply:
    """What `accepted` answers for one request: per message, its errors or its recipients."""

    base_url: str
    messages: tuple[tuple[Mapping[str, Any], list[Error]], ...]


_REPLY: ContextVar[_Reply | None] = ContextVar("mailjet_reply", default=None)


class MailjetShape:
    """The Mailjet v3.1 shape; one instance serves every request of one emulator."""

    routes: Sequence[Route] = (("POST", "/v3.1/send"),)

    def __init__(self) -> None:
        self._message_ids = itertools.count(_FIRST_MESSAGE_ID)

    async def receive(self, request: web.Request) -> Received | web.Response:
        key = _credential(request.headers.get("Authorization", ""))
        if key is None:
            return _global_error(
                401, "mj-0015", "authentication failed: send Basic auth with API key and secret"
            )
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _global_error(400, "mj-0002", "malformed JSON: review the syntax and types")
        if not isinstance(body, dict):
            return _global_error(400, "mj-0004", "type mismatch: expected a JSON object")
        messages = _messages(body.get("Messages"))
        if isinstance(messages, web.Response):
            return messages
        global_fields = body.get("Globals")
        defaults = global_fields if isinstance(global_fields, dict) else {}
        # Mailjet applies Globals to every message, which may override them.
        checked = tuple(
            (merged, _message_errors(merged, defaults))
            for merged in ({**defaults, **m} for m in messages)
        )
        reply = _Reply(str(request.url.origin()), checked)
        if body.get("SandboxMode") is True:
            return self._answer(reply, message_id="")
        valid = [m for m, (_, errors) in zip(messages, checked, strict=True) if not errors]
        if not valid:
            return self._answer(reply, message_id="")
        if len(valid) < len(checked):
            raw = orjson.dumps({**body, "Messages": valid})
        _REPLY.set(reply)
        return Received(body=raw, headers=_recorded_headers(request.headers, key))

    def accepted(self, message_id: str) -> web.Response:
        reply = _REPLY.get()
        _REPLY.set(None)
        return self._answer(reply or _Reply("", ()), message_id)

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        response = _global_error(
            status, f"emulated-{status}", f"{_phrase(status)} (emulated fault)"
        )
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response

    def _answer(self, reply: _Reply, message_id: str) -> web.Response:
        """Mailjet's per-message answer; `message_id` "" means nothing was stored (no ids)."""
        uuids = _uuids(message_id)
        entries: list[dict[str, Any]] = []
        status = 200
        for message, errors in reply.messages:
            if errors:
                entries.append({"Status": "error", "Errors": errors})
                if status == 200:
                    status = errors[0]["StatusCode"]
                continue
            entry: dict[str, Any] = {"Status": "success", "CustomID": _text(message, "CustomID")}
            for field in ("To", "Cc", "Bcc"):
                entry[field] = [
                    self._recipient(item, uuids, reply.base_url, numbered=bool(message_id))
                    for item in _list(message.get(field))
                ]
            entries.append(entry)
        return web.Response(
            status=status, body=orjson.dumps({"Messages": entries}), content_type=_JSON
        )

    def _recipient(
        self, item: Any, uuids: Iterator[str], base_url: str, *, numbered: bool
    ) -> dict[str, Any]:
        email = item.get("Email") if isinstance(item, dict) else None
        number = next(self._message_ids) if numbered else 0
        return {
            "Email": email,
            "MessageUUID": next(uuids),
            "MessageID": number,
            "MessageHref": f"{base_url}/v3/REST/message/{number}",
        }


def _credential(authorization: str) -> str | None:
    """The API key (or Bearer token) when the header carries usable credentials."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except ValueError:  # bad base64 (binascii.Error) or not UTF-8
        return None
    key, colon, secret = decoded.partition(":")
    return key if key and colon and secret else None


def _messages(value: object) -> list[dict[str, Any]] | web.Response:
    """The `Messages` array, or the global error Mailjet answers when it is unusable."""
    if value is None:
        problem = "mj-0003", "Messages is mandatory but missing from the input"
    elif not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        problem = "mj-0004", "type mismatch: Messages must be an array of objects"
    elif not value:
        problem = "mj-0007", "Messages must not be empty"
    elif len(value) > _MAX_ITEMS:
        problem = "mj-0008", f"Messages holds more than {_MAX_ITEMS} items"
    else:
        return value
    return _global_error(400, *problem, related=["Messages"])


def _message_errors(message: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[Error]:
    """Mailjet's validation errors for one message; empty when it can be sent."""
    errors: list[Error] = []
    templated = "TemplateID" in message or "TemplateID" in defaults
    if "From" in message:
        errors += _address_errors(message["From"], "From")
    elif not (templated or "From" in defaults):
        errors.append(_error(400, "mj-0003", "From is mandatory but missing", ["From"]))
    to = message.get("To")
    if to is None:
        errors.append(_error(400, "mj-0003", "To is mandatory but missing", ["To"]))
    elif isinstance(to, list) and not to:
        errors.append(_error(400, "mj-0007", "To must not be empty", ["To"]))
    recipients = 0
    for field in ("To", "Cc", "Bcc"):
        value = message.get(field)
        if value is None:
            continue
        if not isinstance(value, list):
            errors.append(_error(400, "mj-0004", f"type mismatch: {field} is an array", [field]))
            continue
        recipients += len(value)
        for index, item in enumerate(value):
            errors += _address_errors(item, f"{field}[{index}]")
    if recipients > _MAX_ITEMS:
        errors.append(
            _error(400, "send-0015", "too many recipients in one message", ["To", "Cc", "Bcc"])
        )
    if "ReplyTo" in message:
        errors += _address_errors(message["ReplyTo"], "ReplyTo")
    if not any(f in message or f in defaults for f in _CONTENT_FIELDS):
        errors.append(
            _error(
                400,
                "send-0003",
                "a TextPart, HTMLPart or TemplateID is required",
                [*_CONTENT_FIELDS],
            )
        )
    for field in ("Attachments", "InlinedAttachments"):
        errors += _attachment_errors(message.get(field), field)
    return errors


def _address_errors(value: object, where: str) -> list[Error]:
    if not isinstance(value, dict):
        return [_error(400, "mj-0004", "type mismatch: expected {Email, Name}", [where])]
    email = value.get("Email")
    if not isinstance(email, str) or not email:
        return [_error(400, "mj-0012", "Email must not be empty", [f"{where}.Email"])]
    local, at, domain = email.rpartition("@")
    if not (local and at and "." in domain and not any(c.isspace() for c in email)):
        return [
            _error(400, "mj-0013", f'"{email}" is an invalid email address.', [f"{where}.Email"])
        ]
    return []


def _attachment_errors(value: object, field: str) -> list[Error]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [_error(400, "mj-0004", f"type mismatch: {field} is an array", [field])]
    if len(value) > _MAX_ITEMS:
        return [_error(400, "mj-0008", f"{field} holds more than {_MAX_ITEMS} items", [field])]
    errors = []
    for index, item in enumerate(value):
        for name in _ATTACHMENT_FIELDS:
            content = item.get(name) if isinstance(item, dict) else None
            if not isinstance(content, str) or not content:
                where = f"{field}[{index}].{name}"
                errors.append(_error(400, "mj-0012", f"{name} must be a non-empty string", [where]))
    return errors


def _error(status: int, code: str, message: str, related: list[str]) -> Error:
    return {
        "ErrorIdentifier": str(uuid.uuid4()),
        "ErrorCode": code,
        "StatusCode": status,
        "ErrorMessage": message,
        "ErrorRelatedTo": related,
    }


def _global_error(
    status: int, code: str, message: str, related: list[str] | None = None
) -> web.Response:
    body: dict[str, Any] = {
        "ErrorIdentifier": str(uuid.uuid4()),
        "ErrorCode": code,
        "StatusCode": status,
        "ErrorMessage": message,
    }
    if related:
        body["ErrorRelatedTo"] = related
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _uuids(message_id: str) -> Iterator[str]:
    """The emulator id for the first recipient, then `<id>-1`, `<id>-2`, … ("" in sandbox)."""
    if not message_id:
        return itertools.repeat("")
    return itertools.chain((message_id,), (f"{message_id}-{n}" for n in itertools.count(1)))


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"authorization": f"…{key[-4:]}" if len(key) > 8 else "…"}
    for name in ("content-type", "user-agent", "idempotency-key"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(message: Mapping[str, Any], field: str) -> str:
    value = message.get(field)
    return value if isinstance(value, str) else ""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
