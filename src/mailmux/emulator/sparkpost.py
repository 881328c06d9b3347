"""SparkPost's Transmissions API as the emulator serves it.

`POST /api/v1/transmissions` with `Authorization: <API key>` (the raw key, or Basic
with the key as user name) and a JSON body → 200
`{"results": {"total_rejected_recipients": 0, "total_accepted_recipients": n, "id"}}`;
errors are `{"errors": [{"message", "description", "code"}]}` with SparkPost's extended
error codes, so the official SDK (`SparkPostAPIException`) and mailmux's adapter read
them as they would SparkPost's.

Only what SparkPost certainly rejects is checked: recipients (a non-empty list of
addresses, or a stored list id) and content — RFC 822 text, a stored template or A/B
test, or inline content with a sender, a subject, a text or HTML body, and attachments
and inline images with a name, type and data. The request body is stored as received.

`accepted` reports the recipient count the preceding `receive` counted: the server
calls the two back to back with no await between them, so no other request can come
in between.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route

_JSON = "application/json"
#: One problem: (message, description, extended error code).
Problem = tuple[str, str, str | None]
#: What an injected fault says, per status: SparkPost's message and extended code.
_FAULTS: Mapping[int, tuple[str, str | None]] = {
    401: ("Unauthorized.", None),
    403: ("permission denied", "1100"),
    420: ("Exceed Sending Limit (hourly)", "2101"),
    429: ("Too many requests", None),
    503: ("Message generation module not available", "1900"),
}
_PART_FIELDS = ("name", "type", "data")  # of an attachment or inline image


class SparkPostShape:
    """The SparkPost shape: one instance serves every request."""

    routes: Sequence[Route] = (("POST", "/api/v1/transmissions"),)

    def __init__(self) -> None:
        self._recipients = 0  # counted by `receive`, reported by the next `accepted`

    async def receive(self, request: web.Request) -> Received | web.Response:
        key = _api_key(request.headers.get("Authorization", ""))
        if key is None:
            unauthorized: Problem = ("Unauthorized.", "send 'Authorization: <API key>'", None)
            return _errors(401, [unauthorized])
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            malformed: Problem = ("invalid data format/type/length", "not a JSON object", "1300")
            return _errors(400, [malformed])
        recipients, problems = _recipients(body.get("recipients"))
        problems += _content_problems(body.get("content"))
        if problems:
            return _errors(422, problems)
        self._recipients = recipients
        return Received(body=raw, headers=_recorded_headers(request.headers, key))

    def accepted(self, message_id: str) -> web.Response:
        count, self._recipients = self._recipients, 0
        results = {
            "total_rejected_recipients": 0,
            "total_accepted_recipients": count,
            "id": message_id,
        }
        return _json(200, {"results": results})

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        message, code = _FAULTS.get(status, (_phrase(status), None))
        response = _errors(status, [(message, "emulated fault", code)])
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response


def _api_key(authorization: str) -> str | None:
    """The key from `<key>` or `Basic base64(<key>:)`; None when there is none."""
    value = authorization.strip()
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            user = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    if not value or " " in value:  # e.g. "Bearer …": not a SparkPost key
        return None
    return value


def _recipients(recipients: object) -> tuple[int, list[Problem]]:
    """(how many recipients, problems); a stored list counts as none known."""
    if isinstance(recipients, dict) and isinstance(recipients.get("list_id"), str):
        return 0, []
    if not (isinstance(recipients, list) and recipients):
        return 0, [("required field is missing", "recipients is a required field", "1400")]
    problems: list[Problem] = [
        ("invalid data format/type/length", f"recipients[{i}].address needs an email", "1300")
        for i, recipient in enumerate(recipients)
        if not (isinstance(recipient, dict) and _has_email(recipient.get("address")))
    ]
    return len(recipients), problems


def _has_email(address: object) -> bool:
    if isinstance(address, dict):
        address = address.get("email")
    return isinstance(address, str) and bool(address.strip())


def _content_problems(content: object) -> list[Problem]:
    if not isinstance(content, dict):
        return [("required field is missing", "content is a required field", "1400")]
    if "email_rfc822" in content:
        if _text(content.get("email_rfc822")):
            return []
        return [("invalid data format/type/length", "content.email_rfc822 is empty", "1300")]
    if _text(content.get("template_id")) or _text(content.get("ab_test_id")):
        return []
    problems: list[Problem] = []
    if not _has_email(content.get("from")):
        problems.append(("required field is missing", "content.from is a required field", "1400"))
    if not isinstance(content.get("subject"), str):
        problems.append(
            ("required field is missing", "content.subject is a required field", "1400")
        )
    if not (_text(content.get("text")) or _text(content.get("html"))):
        problems.append(
            ("required field is missing", "at least one of content.text or content.html", "1400")
        )
    for field in ("attachments", "inline_images"):
        parts = content.get(field, [])
        if not isinstance(parts, list):
            parts = [None]
        for index, part in enumerate(parts):
            if not (isinstance(part, dict) and all(_text(part.get(k)) for k in _PART_FIELDS)):
                problems.append(
                    (
                        "required field is missing",
                        f"content.{field}[{index}] needs a name, type and data",
                        "1400",
                    )
                )
    return problems


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"authorization": f"…{key[-4:]}" if len(key) > 8 else "…"}
    for name in ("content-type", "user-agent"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded


def _errors(status: int, problems: list[Problem]) -> web.Response:
    errors: list[dict[str, Any]] = []
    for message, description, code in problems:
        error = {"message": message, "description": description}
        if code is not None:
            error["code"] = code
        errors.append(error)
    return _json(status, {"errors": errors})


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
