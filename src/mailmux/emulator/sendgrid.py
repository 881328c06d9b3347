"""SendGrid's v3 Mail Send as the emulator serves it.

`POST /v3/mail/send` with `Authorization: Bearer <key>` and a JSON body →
202, empty body, id in `X-Message-Id`; errors are
`{"errors": [{"message", "field", "help"}]}` (SendGrid's own shape, so the
official SDK and mailmux's adapter parse them as they would SendGrid's).

Only what SendGrid certainly rejects is checked, cheaply, because the
emulator is also the "fast ESP" of the benchmarks: a sender, at least one
personalization each with a `to`, a body (or a template), a subject (or a
template). The request body is stored as received, not re-encoded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route

_JSON = "application/json"


class SendGridShape:
    """The SendGrid shape; stateless, so one instance serves every request."""

    routes: Sequence[Route] = (("POST", "/v3/mail/send"),)

    async def receive(self, request: web.Request) -> Received | web.Response:
        authorization = request.headers.get("Authorization", "")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _errors(
                401, [("authorization required: send 'Authorization: Bearer <API key>'", None)]
            )
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _errors(400, [("the request body is not valid JSON", None)])
        if not isinstance(body, dict):
            return _errors(400, [("the request body must be a JSON object", None)])
        problems = _problems(body)
        if problems:
            return _errors(400, problems)
        return Received(body=raw, headers=_recorded_headers(request.headers, key.strip()))

    def accepted(self, message_id: str) -> web.Response:
        return web.Response(status=202, headers={"X-Message-Id": message_id})

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        response = _errors(status, [(f"{_phrase(status)} (emulated fault)", None)])
        if retry_after is not None:
            seconds = max(0, round(retry_after))
            response.headers["Retry-After"] = str(seconds)
            if status == 429:  # SendGrid's own rate-limit headers; Reset is an epoch second.
                response.headers["X-RateLimit-Limit"] = "600"
                response.headers["X-RateLimit-Remaining"] = "0"
                response.headers["X-RateLimit-Reset"] = str(int(time.time()) + seconds)
        return response


def _problems(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The (message, field) pairs SendGrid would answer 400 with; empty when acceptable."""
    problems: list[tuple[str, str | None]] = []
    sender = body.get("from")
    if not (isinstance(sender, dict) and _non_empty_str(sender.get("email"))):
        problems.append(("from.email is required", "from.email"))
    personalizations = body.get("personalizations")
    if not (isinstance(personalizations, list) and personalizations):
        problems.append(("at least one personalization is required", "personalizations"))
        personalizations = []
    for index, personalization in enumerate(personalizations):
        to = personalization.get("to") if isinstance(personalization, dict) else None
        if not (isinstance(to, list) and to and all(_has_email(item) for item in to)):
            message = (
                "The to array is required for all personalization objects, and must have"
                " at least one email object with a valid email address."
            )
            problems.append((message, f"personalizations.{index}.to"))
    has_template = _non_empty_str(body.get("template_id"))
    content = body.get("content")
    if content is None:
        if not has_template:
            problems.append(("content is required unless a template_id is given", "content"))
    elif not (isinstance(content, list) and content and all(map(_is_content, content))):
        problems.append(("content must be a list of non-empty {type, value} objects", "content"))
    subject_everywhere = bool(personalizations) and all(
        isinstance(p, dict) and _non_empty_str(p.get("subject")) for p in personalizations
    )
    if not (_non_empty_str(body.get("subject")) or subject_everywhere or has_template):
        problems.append(
            ("a subject is required, at the top level or in every personalization", "subject")
        )
    return problems


def _non_empty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _has_email(item: object) -> bool:
    return isinstance(item, dict) and _non_empty_str(item.get("email"))


def _is_content(item: object) -> bool:
    return (
        isinstance(item, dict)
        and _non_empty_str(item.get("type"))
        and _non_empty_str(item.get("value"))
    )


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"authorization": f"Bearer …{key[-4:]}" if len(key) > 8 else "Bearer …"}
    for name in ("content-type", "user-agent", "on-behalf-of"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded


def _errors(status: int, problems: list[tuple[str, str | None]]) -> web.Response:
    body = {"errors": [{"message": m, "field": f, "help": None} for m, f in problems]}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
