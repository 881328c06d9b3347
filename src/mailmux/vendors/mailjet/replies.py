"""Mailjet's answers to `POST /v3.1/send`, worded for mailmux and for the emulator alike.

Mailjet answers in two shapes (its Send API guide, "Status codes"):

- a *global* error for the call as a whole (bad JSON, bad key, no usable
  `Messages`): `{ErrorIdentifier, ErrorCode, StatusCode, ErrorMessage}` with
  `ErrorRelatedTo` when a property is to blame;
- a *per-message* answer, `{"Messages": [entry, ...]}` in request order, each
  entry `{"Status": "success", "CustomID", "To", "Cc", "Bcc"}` (one id set per
  recipient) or `{"Status": "error", "Errors": [...]}`. The HTTP status is 200
  when every entry succeeded, else the first failed entry's `StatusCode` (400
  for what mailmux refuses), as Mailjet answers a batch with a failed message.

`mailjet-rest` raises on every status ≥ 400: `ValidationError` for 400,
`MailjetAuthError` for 401/403, `ApiRateLimitError` for 429, plain
`ApiError` otherwise; over https it retries 429 and 5xx up to three times.
So how each `Failure` is answered:

=====================  ======  ==============================  ==========================
Failure                status  ErrorCode                       the SDK
=====================  ======  ==============================  ==========================
INVALID_JSON           400     mj-0002 (global)                ValidationError
INVALID_REQUEST        400     Mailjet's code per problem;     ValidationError
                               per message when a message is
                               to blame, global otherwise
TOO_LARGE              400     mj-0011 (global)                ValidationError
UNAUTHORIZED           401     mj-0015 (global)                MailjetAuthError
FORBIDDEN              401     mj-0015 (global)                MailjetAuthError
REJECTED               400     mailmux-rejected                ValidationError
EXPIRED                400     mailmux-expired                 ValidationError
UNAVAILABLE            503     mailmux-unavailable             ApiError (retried on https:
                                                               nothing was accepted)
IDEMPOTENCY_REUSED     400     mailmux-idempotency-key-reused  ValidationError (no retry)
IDEMPOTENCY_IN_FLIGHT  429     mailmux-idempotency-in-flight,  ApiRateLimitError; on https
                               Retry-After: 1                  at most 3 retries, which
                                                               get the first answer
=====================  ======  ==============================  ==========================

Mailjet has no code for what only mailmux decides (every vendor refused the
message, its deadline passed, ...): those codes say `mailmux-` so that no one
mistakes them for Mailjet's. A wrong key is 401 whether or not one was given,
as Mailjet answers a bad key pair.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailmux.message import FieldError
from mailmux.vendors.inbound import Failure, ItemResult, Reply, json_reply

MALFORMED_JSON = "Malformed JSON, please review the syntax and properties types."
#: Mailjet's "no body" rule names three properties at once.
BODY_FIELDS = ("TextPart", "HTMLPart", "TemplateID")

#: A FieldError code → Mailjet's ErrorCode (its documented table); all are status 400.
_CODES: Mapping[str, str] = {
    "required": "mj-0003",
    "invalid_type": "mj-0004",
    "invalid_value": "mj-0005",
    "empty_array": "mj-0007",
    "too_many": "mj-0008",
    "too_large": "mj-0011",
    "empty": "mj-0012",
    "invalid_address": "mj-0013",
    "no_body": "send-0003",
    "reserved_header": "send-0011",
    "too_many_recipients": "send-0015",
    "not_sent": "mailmux-not-sent",
}
#: What the other shared rules find (header injection, a bad filename, ...): a value
#: Mailjet's table calls "not allowed".
_OTHER_CODE = "mj-0005"
_GLOBAL: Mapping[Failure, tuple[int, str]] = {
    Failure.INVALID_JSON: (400, "mj-0002"),
    Failure.INVALID_REQUEST: (400, _OTHER_CODE),
    Failure.TOO_LARGE: (400, "mj-0011"),
    Failure.UNAUTHORIZED: (401, "mj-0015"),
    Failure.FORBIDDEN: (401, "mj-0015"),
    Failure.REJECTED: (400, "mailmux-rejected"),
    Failure.EXPIRED: (400, "mailmux-expired"),
    Failure.UNAVAILABLE: (503, "mailmux-unavailable"),
    Failure.IDEMPOTENCY_REUSED: (400, "mailmux-idempotency-key-reused"),
    Failure.IDEMPOTENCY_IN_FLIGHT: (429, "mailmux-idempotency-in-flight"),
}
_KEY_REFUSED = "API key authentication/authorization failure: {}"
_ITEM_PATH = re.compile(r"Messages\[(\d+)\](?:\.(.*))?", re.DOTALL)
_SAFE_INTEGER = 2**53  # what a JSON number keeps exactly in JavaScript


@dataclass(frozen=True, slots=True)
class Echo:
    """What a success entry repeats from its message: CustomID and each recipient's Email."""

    custom_id: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()


#: One recipient's ids in a success entry: (MessageUUID, MessageID, MessageHref).
Ids = tuple[str, int, str]


def success(echo: Echo, ids: Iterator[Ids]) -> dict[str, Any]:
    """A `Status: success` entry, the next ids going to each recipient in turn."""
    entry: dict[str, Any] = {"Status": "success", "CustomID": echo.custom_id}
    for field, emails in (("To", echo.to), ("Cc", echo.cc), ("Bcc", echo.bcc)):
        entry[field] = [_recipient(email, *next(ids)) for email in emails]
    return entry


def _recipient(email: str, message_uuid: str, message_id: int, href: str) -> dict[str, Any]:
    return {
        "Email": email,
        "MessageUUID": message_uuid,
        "MessageID": message_id,
        "MessageHref": href,
    }


def error(code: str, status: int, message: str, related: Sequence[str] = ()) -> dict[str, Any]:
    """One entry of a message's `Errors`."""
    return {
        "ErrorIdentifier": str(uuid.uuid4()),
        "ErrorCode": code,
        "StatusCode": status,
        "ErrorMessage": message,
        "ErrorRelatedTo": list(related),
    }


def refused(errors: Sequence[FieldError]) -> dict[str, Any]:
    """A `Status: error` entry for one message's problems (paths relative to the message)."""
    return {"Status": "error", "Errors": [field_error(e) for e in errors]}


def field_error(problem: FieldError) -> dict[str, Any]:
    code = _CODES.get(problem.code, _OTHER_CODE)
    related = BODY_FIELDS if problem.code == "no_body" else (problem.path,) if problem.path else ()
    return error(code, 400, problem.message, related)


def answer(entries: Sequence[Mapping[str, Any]]) -> Reply:
    """The per-message answer: 200, or the first failed entry's StatusCode."""
    status = next((e["Errors"][0]["StatusCode"] for e in entries if e["Status"] == "error"), 200)
    return json_reply(status, {"Messages": entries})


def global_error(
    status: int,
    code: str,
    message: str,
    related: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """Mailjet's error for the call as a whole."""
    body: dict[str, Any] = {
        "ErrorIdentifier": str(uuid.uuid4()),
        "ErrorCode": code,
        "StatusCode": status,
        "ErrorMessage": message,
    }
    if related:
        body["ErrorRelatedTo"] = list(related)
    return json_reply(status, body, headers)


def failure(failure: Failure, message: str, errors: Sequence[FieldError] = ()) -> Reply:
    """A refused request in Mailjet's words (the module docstring's table)."""
    if failure is Failure.INVALID_REQUEST and errors:
        return _invalid(errors)
    status, code = _GLOBAL[failure]
    if failure in (Failure.UNAUTHORIZED, Failure.FORBIDDEN):
        message = _KEY_REFUSED.format(message)
    elif failure is Failure.INVALID_JSON:
        message = MALFORMED_JSON
    if failure is Failure.IDEMPOTENCY_IN_FLIGHT:
        return global_error(status, code, message, headers={"Retry-After": "1"})
    return global_error(status, code, message)


def _invalid(errors: Sequence[FieldError]) -> Reply:
    """Per message when messages are to blame (every message then has an entry), else global."""
    by_message: dict[int, list[FieldError]] = {}
    for problem in errors:
        found = _ITEM_PATH.fullmatch(problem.path)
        if found is None:  # a call-level problem: Mailjet answers those alone
            code = _CODES.get(problem.code, _OTHER_CODE)
            return global_error(400, code, problem.message, (problem.path,) if problem.path else ())
        relative = FieldError(found[2] or "", problem.code, problem.message)
        by_message.setdefault(int(found[1]), []).append(relative)
    return answer([refused(by_message[i]) for i in sorted(by_message)])


def results(outcomes: Sequence[ItemResult], echoes: Sequence[Echo]) -> Reply:
    """mailmux's results as Mailjet's per-message answer; a queued message is a success.

    Every recipient's `MessageUUID` is mailmux's message id (what `GET
    /v1/messages/{id}` takes; `MessageHref` is that path). `MessageID` stays a
    JSON number, as Mailjet's clients and its other APIs expect: one derived
    from mailmux's id and the recipient's place, stable on a replay, below
    2**53 so JavaScript keeps it exact. It names nothing mailmux can look up.
    """
    entries: list[dict[str, Any]] = []
    for outcome, echo in zip(outcomes, echoes, strict=True):
        if outcome.accepted:
            entries.append(success(echo, mailmux_ids(outcome.id)))
        elif outcome.expired:
            why = outcome.reason or "its deadline passed before a vendor took it"
            entries.append({"Status": "error", "Errors": [error("mailmux-expired", 400, why)]})
        else:
            why = outcome.reason or "every vendor refused the message"
            entries.append({"Status": "error", "Errors": [error("mailmux-rejected", 400, why)]})
    return answer(entries)


def mailmux_ids(message_id: str) -> Iterator[Ids]:
    """The ids of each recipient of mailmux message `message_id`, in turn."""
    href = f"/v1/messages/{message_id}"
    place = 0
    while True:
        digest = hashlib.sha256(f"{message_id}/{place}".encode()).digest()
        number = _SAFE_INTEGER // 2 + int.from_bytes(digest[:8]) % (_SAFE_INTEGER // 2)
        yield message_id, number, href
        place += 1
