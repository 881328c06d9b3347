"""Mailgun's `/messages` and `/messages.mime` as the emulator serves them.

`POST /v3/{domain}/messages` (a form: multipart, or urlencoded as the
official SDK sends one without files) and `POST /v3/{domain}/messages.mime`
(a form with `to` and the MIME in a `message` file part), both with HTTP
Basic auth `api:<key>` → 200 `{"id": "<…>", "message": "Queued. Thank you."}`.
The id in angle brackets is the emulator's message id, so what the listing
shows is what a client keeps once it drops the brackets. Errors are
Mailgun's: a bare `Forbidden` for bad auth, `{"message": …}` otherwise.

The form is stored as a JSON object that keeps every field: the fields
Mailgun documents as repeatable (to, cc, bcc, o:tag, attachment, inline)
and any other field sent more than once as lists, the rest as strings,
files as `{filename, content_type, content (base64)}`. Where the request
went is recorded among the headers as `:path`.

Checked, cheaply, is what Mailgun certainly refuses: `/messages` needs
`from`, `to`, `subject` and a body (`text`, `html`, `amp-html` or a
`template`); `/messages.mime` needs `to` and the `message` file.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from mailmux.emulator.base import Received, Route

_JSON = "application/json"
_MESSAGES = "/v3/{domain}/messages"
_MIME = "/v3/{domain}/messages.mime"
#: Fields stored as lists even when sent once: Mailgun takes each of them repeatedly.
_REPEATABLE = frozenset({"to", "cc", "bcc", "o:tag", "attachment", "inline"})
_BODY_FIELDS = ("text", "html", "amp-html", "template")


class MailgunShape:
    """The Mailgun shape; stateless, so one instance serves every request."""

    routes: Sequence[Route] = (("POST", _MESSAGES), ("POST", _MIME))

    async def receive(self, request: web.Request) -> Received | web.Response:
        key = _api_key(request.headers.get("Authorization", ""))
        if key is None:
            return _forbidden()
        try:
            form = await _read_form(request)
        except ValueError as err:
            return _message(400, f"The request is not a form Mailgun can read: {err}")
        problem = _problem(form, mime=request.path.endswith(".mime"))
        if problem is not None:
            return _message(400, problem)
        headers = _recorded_headers(request, key)
        return Received(body=orjson.dumps(form), headers=headers)

    def accepted(self, message_id: str) -> web.Response:
        return _json(200, {"id": f"<{message_id}>", "message": "Queued. Thank you."})

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        if status == 401:
            response = _forbidden()
        else:
            response = _message(status, f"Emulated fault: HTTP {status}")
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response


def _api_key(authorization: str) -> str | None:
    """The key of `Basic api:<key>`, or None when that is not what was sent."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, key = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return key if user == "api" and key else None


async def _read_form(request: web.Request) -> dict[str, Any]:
    """Every field of the form, in order; repeated fields as lists (see the docstring)."""
    form: dict[str, Any] = {}
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                raise ValueError("a part without a field name")
            if part.filename is None:
                _add(form, part.name, await part.text())
            else:
                content = await part.read(decode=True)
                _add(form, part.name, _file(part.filename, part.headers, bytes(content)))
    elif request.content_type == "application/x-www-form-urlencoded":
        for name, value in (await request.post()).items():
            _add(form, name, value)
    else:
        raise ValueError(f"content type {request.content_type or 'none'!r}")
    return form


def _add(form: dict[str, Any], name: str, value: object) -> None:
    if name in form:
        current = form[name]
        if isinstance(current, list):  # values are strings or file objects, never lists
            current.append(value)
        else:
            form[name] = [current, value]
    else:
        form[name] = [value] if name in _REPEATABLE else value


def _file(filename: str, headers: Mapping[str, str], content: bytes) -> dict[str, str | None]:
    return {
        "filename": filename,
        "content_type": headers.get("Content-Type"),
        "content": base64.b64encode(content).decode("ascii"),
    }


def _problem(form: dict[str, Any], *, mime: bool) -> str | None:
    """The `message` Mailgun would answer 400 with, or None when it would accept."""
    if not form.get("to"):
        return "'to' parameter is missing"
    if mime:
        message = form.get("message")
        if not isinstance(message, dict):
            return "'message' parameter is missing: send the MIME as a file"
        return None
    if not isinstance(form.get("from"), str) or not form["from"]:
        return "'from' parameter is missing"
    if not isinstance(form.get("subject"), str):
        return "'subject' parameter is missing"
    if not any(form.get(name) for name in _BODY_FIELDS):
        return "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified"
    return None


def _recorded_headers(request: web.Request, key: str) -> dict[str, str]:
    """Where the request went and what a test wants to see of its headers; the key is
    shown by its tail only."""
    shown = f"api:…{key[-4:]}" if len(key) > 8 else "api:…"
    recorded = {":path": request.path, "authorization": f"Basic {shown}"}
    for name in ("content-type", "user-agent"):
        value = request.headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded


def _forbidden() -> web.Response:
    return web.Response(status=401, text="Forbidden")


def _message(status: int, message: str) -> web.Response:
    return _json(status, {"message": message})


def _json(status: int, data: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=_JSON)
