"""Mailgun's `/messages` and `/messages.mime` as the emulator serves them.

The emulator is Mailgun as mailmux's inbound shape understands it: the same
credential rule (Basic `api:<key>`, any non-empty key), the same form reader
and the same checks (`MailgunInbound.message`: a request mailmux's own
Mailgun API would refuse, the emulator refuses with the same 400), and the
same answers (`replies`): 200 `{"id": "<…>", "message": "Queued. Thank
you."}` with the emulator's message id in the brackets, a bare `Forbidden`
for bad auth, `{"message": …}` otherwise.

The form is stored as a JSON object that keeps every field: the fields
Mailgun documents as repeatable (to, cc, bcc, o:tag, attachment, inline)
and any other field sent more than once as lists, the rest as strings,
files as `{filename, content_type, content (base64)}`. Where the request
went is recorded among the headers as `:path`, and the SHA-256 of the body as
it came as `:sha256`, so a test can tell a form passed through byte for byte
from one encoded anew.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route, reply_response
from mailmux.message import DEFAULT_LIMITS
from mailmux.vendors.inbound import Failure, ShapeError, ShapeRequest
from mailmux.vendors.mailgun.form import FormField
from mailmux.vendors.mailgun.inbound import MailgunInbound, basic_key
from mailmux.vendors.mailgun.outbound import MESSAGES, MIME
from mailmux.vendors.mailgun.replies import error, failure_reply, forbidden, queued

#: Fields stored as lists even when sent once: Mailgun takes each of them repeatedly.
_REPEATABLE = frozenset({"to", "cc", "bcc", "o:tag", "attachment", "inline"})
_INBOUND = MailgunInbound()


class MailgunShape:
    """The Mailgun shape; stateless, so one instance serves every request."""

    routes: Sequence[Route] = tuple((e.method, e.path) for e in _INBOUND.endpoints)

    async def receive(self, request: web.Request) -> Received | web.Response:
        incoming = ShapeRequest.of(
            MIME if request.path.endswith(".mime") else MESSAGES, request, await request.read()
        )
        key = basic_key(request.headers.get("Authorization", ""))
        if key is None:
            return reply_response(failure_reply(Failure.UNAUTHORIZED, "no API key"))
        try:
            form = _INBOUND.form(incoming)
            _INBOUND.message(incoming, form, now=time.time(), limits=DEFAULT_LIMITS)
        except ShapeError as err:
            return reply_response(failure_reply(err.failure, err.message))
        recorded = _recorded_headers(request, key)
        recorded[":sha256"] = hashlib.sha256(incoming.body).hexdigest()
        return Received(body=orjson.dumps(_stored(form)), headers=recorded)

    def accepted(self, message_id: str) -> web.Response:
        return reply_response(queued(message_id))

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        reply = forbidden() if status == 401 else error(status, f"Emulated fault: HTTP {status}")
        response = reply_response(reply)
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response


def _stored(form: Sequence[FormField]) -> dict[str, Any]:
    """Every field of the form, in order; repeated fields as lists (see the docstring)."""
    stored: dict[str, Any] = {}
    for field in form:
        value: object = field.value
        if isinstance(field.value, bytes):
            value = {
                "filename": field.filename,
                "content_type": field.content_type,
                "content": base64.b64encode(field.value).decode("ascii"),
            }
        current = stored.get(field.name)
        if isinstance(current, list):  # values are strings or file objects, never lists
            current.append(value)
        elif field.name in stored:
            stored[field.name] = [current, value]
        else:
            stored[field.name] = [value] if field.name in _REPEATABLE else value
    return stored


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
