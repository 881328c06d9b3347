"""Mailjet's Send API v3.1 served by mailmux: `POST /v3.1/send` in, Mailjet's answer out.

A service using `mailjet-rest` (or any Mailjet client) changes only its base
URL. Its key goes where Mailjet's does: HTTP Basic `<API key>:<secret key>`,
where mailmux reads the API key as the client's name and the secret as its
key, or `Bearer <key>`. The body is read by `request` (what is carried, what
is dropped when translated, what only Mailjet can carry) and answered by
`replies` (every `Failure`, and the per-message answer).

One request holds up to 50 messages, each a Message of its own with
`Globals` applied; each one's `original` is the request narrowed to it
(`{"Messages": [it], "Globals": ..., ...}`), so a Mailjet vendor sends it
alone. Mailjet takes the valid messages of a batch and refuses the others;
mailmux refuses the whole request when any message is invalid (nothing is
sent, nothing spooled), answering every message: the invalid ones with
their errors, the valid ones with `mailmux-not-sent`.

The answer is per message, as Mailjet's: a success entry for a sent or
queued message (its `MessageUUID` is mailmux's id, see `replies.results`),
an error entry for one every vendor refused or whose deadline passed, and
then, as Mailjet does for a batch with a failed message, status 400 — which
`mailjet-rest` raises as `ValidationError` even though the other messages
went out (their entries are in `e.response_body`), exactly as with Mailjet.

A Mailjet entry repeats its message's CustomID and recipients, which
`Shape.reply` cannot see (it gets the request without its body): `parse`
leaves them in a context variable that `reply` reads. Both run in the one
request's handler, so concurrent requests never see each other's.

`Idempotency-Key`: `mailjet-rest` makes one up from the payload; that one is
ignored (`sdk_key`), a key the caller chose is honoured.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from contextvars import ContextVar

from mailmux.message import FieldError, Message, MessageLimits
from mailmux.vendors.inbound import (
    Credential,
    Endpoint,
    Failure,
    ItemResult,
    Reply,
    ShapeError,
    ShapeRequest,
)
from mailmux.vendors.mailjet import replies
from mailmux.vendors.mailjet.replies import Echo
from mailmux.vendors.mailjet.request import ENDPOINT_NAME, KIND, first_problem, read_send
from mailmux.vendors.mailjet.sdk_key import made_by_sdk

ENDPOINT = Endpoint(ENDPOINT_NAME, "POST", "/v3.1/send")
_ECHOES: ContextVar[tuple[Echo, ...] | None] = ContextVar("mailjet_echoes", default=None)
_NOT_SENT = (
    "not sent: another message of this request was refused, and mailmux takes a request"
    " whole or not at all"
)


class MailjetInbound:
    """The Mailjet v3.1 shape (stateless: one instance serves every request)."""

    kind = KIND
    endpoints: Sequence[Endpoint] = (ENDPOINT,)

    def credential(self, request: ShapeRequest) -> Credential | None:
        return credential(request.headers.get("Authorization", ""))

    def idempotency_key(self, request: ShapeRequest) -> str | None:
        """The caller's Idempotency-Key; None for the one `mailjet-rest` generated."""
        key = request.headers.get("Idempotency-Key")
        if key is None or made_by_sdk(key, request.body):
            return None
        return key

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        sent = read_send(request.body, content_type(request), now=now, limits=limits)
        problem = first_problem(sent.items)
        if problem is not None:
            errors: list[FieldError] = []
            for index, item in enumerate(sent.items):
                at = f"Messages[{index}]"
                errors += [_within(at, e) for e in item.errors] or [
                    FieldError(at, "not_sent", _NOT_SENT)
                ]
            raise ShapeError(Failure.INVALID_REQUEST, str(problem), errors)
        _ECHOES.set(tuple(item.echo for item in sent.items))
        return [item.message for item in sent.items if item.message is not None]

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        echoes = _ECHOES.get()
        _ECHOES.set(None)
        if echoes is None or len(echoes) != len(results):  # not parsed here: the ids alone
            echoes = (Echo(to=("",)),) * len(results)
        return replies.results(results, echoes)

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        return replies.failure(failure, message, errors)


def credential(authorization: str) -> Credential | None:
    """Basic `<API key>:<secret>` (name and key) or `Bearer <key>`; None when unusable."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return Credential(value) if value else None
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        return None
    try:
        decoded = raw.decode()
    except UnicodeDecodeError:  # requests encodes Basic credentials as latin-1
        decoded = raw.decode("latin-1")
    name, colon, secret = decoded.partition(":")
    return Credential(secret, name) if name and colon and secret else None


def content_type(request: ShapeRequest) -> str:
    return request.headers.get("Content-Type", "application/json")


def _within(at: str, problem: FieldError) -> FieldError:
    path = f"{at}.{problem.path}" if problem.path else at
    return FieldError(path, problem.code, problem.message)
