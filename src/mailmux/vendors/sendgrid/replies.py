"""SendGrid's answers to `POST /v3/mail/send`, worded for mailmux's results and refusals.

Success is what SendGrid answers: 202, an empty body, the id in
`X-Message-Id`. SendGrid has one id per request, however many
personalizations (emails) it holds, so a request mailmux split into several
messages carries the first message's id there (every id is in
`X-Mailmux-Message-Id`). A spooled message is a success as well: SendGrid's
202 itself only means "queued".

Errors are SendGrid's `{"errors": [{"message", "field", "help"}]}`. The
official SDK raises one exception class per status
(`python_http_client.exceptions`) and never retries, so the status is chosen
for the exception a caller already handles:

====================  ======  =====================================================
Failure               status  why
====================  ======  =====================================================
INVALID_JSON          400     SendGrid's own answer to an unparsable body ("Bad
                              Request"): BadRequestsError.
INVALID_REQUEST       400     one error per problem, `field` in SendGrid's dotted
                              form (`personalizations.0.to.1.email`).
TOO_LARGE             413     SendGrid's "payload too large": PayloadTooLargeError.
UNAUTHORIZED          401     no key in `Authorization: Bearer`: UnauthorizedError.
FORBIDDEN             401     a key mailmux does not know: SendGrid answers a bad
                              key with 401 too ("...invalid, expired, or revoked");
                              its 403 means a *known* key may not send.
REJECTED              400     every vendor refused the message itself: SendGrid's
                              answer to a message it will not send.
EXPIRED               504     the deadline passed before a vendor took it (as the
                              native API answers): GatewayTimeoutError.
UNAVAILABLE           503     nothing accepted, try later: ServiceUnavailableError.
IDEMPOTENCY_REUSED    422     the key belongs to another body (IETF
                              Idempotency-Key draft); the SDK raises its base
                              HTTPError and does not retry.
IDEMPOTENCY_IN_FLIGHT 409     the key's first request is still running (same draft).
====================  ======  =====================================================

A request of several messages where some were accepted and some failed is
answered 202: some mail went out, and a caller retrying on an error would
send it twice. SendGrid has no per-item answer; `X-Mailmux-Message-Id` and
`GET /v1/messages/{id}` tell each message's fate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mailmux.message import FieldError
from mailmux.vendors.inbound import Failure, ItemResult, Reply, json_reply

#: Where SendGrid's `help` links point; the anchor is the field without its indexes.
HELP_PAGE = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
#: The top-level fields of a Mail Send body that SendGrid's error page documents.
BODY_FIELDS = frozenset(
    {"from", "subject", "personalizations", "content", "attachments", "headers", "categories"}
    | {"custom_args", "reply_to", "reply_to_list", "template_id", "sections", "send_at"}
    | {"batch_id", "asm", "ip_pool_name", "mail_settings", "tracking_settings"}
)
_INDEX = re.compile(r"\.\d+(?=\.|$)")

BAD_REQUEST = "Bad Request"
BAD_KEY = "The provided authorization grant is invalid, expired, or revoked"
NO_KEY = "authorization required: send 'Authorization: Bearer <API key>'"
TOO_LARGE = "The JSON payload you have included in your request is too large."
UNAVAILABLE = "The SendGrid v3 Web API is not available."

_STATUS = {
    Failure.INVALID_JSON: 400,
    Failure.INVALID_REQUEST: 400,
    Failure.TOO_LARGE: 413,
    Failure.UNAUTHORIZED: 401,
    Failure.FORBIDDEN: 401,
    Failure.REJECTED: 400,
    Failure.EXPIRED: 504,
    Failure.UNAVAILABLE: 503,
    Failure.IDEMPOTENCY_REUSED: 422,
    Failure.IDEMPOTENCY_IN_FLIGHT: 409,
}
#: SendGrid's own wording where it has one; mailmux's message otherwise.
_WORDING = {
    Failure.INVALID_JSON: BAD_REQUEST,
    Failure.TOO_LARGE: TOO_LARGE,
    Failure.UNAUTHORIZED: NO_KEY,
    Failure.FORBIDDEN: BAD_KEY,
    Failure.UNAVAILABLE: UNAVAILABLE,
}


def accepted(message_id: str) -> Reply:
    """SendGrid's 202: empty body, the id in `X-Message-Id`."""
    return Reply(
        202, b"", {"Content-Type": "text/plain; charset=utf-8", "X-Message-Id": message_id}
    )


def errors(status: int, problems: Iterable[tuple[str, str | None]]) -> Reply:
    """SendGrid's error body: one entry per (message, field); `help` follows the field."""
    return json_reply(
        status,
        {"errors": [{"message": m, "field": f, "help": help_link(f)} for m, f in problems]},
    )


def help_link(field: str | None) -> str | None:
    """SendGrid's help link: `personalizations.0.to` → `…#message.personalizations.to`."""
    if not field or field.partition(".")[0] not in BODY_FIELDS:
        return None  # not a body field (an X-Mailmux-* header): no SendGrid page for it
    return f"{HELP_PAGE}#message.{_INDEX.sub('', field)}"


def failure(failure: Failure, message: str, problems: Sequence[FieldError] = ()) -> Reply:
    """A refused request in SendGrid's words (see the module docstring for the statuses)."""
    status = _STATUS[failure]
    if failure is Failure.INVALID_REQUEST and problems:
        return errors(status, ((p.message, p.path or None) for p in problems))
    return errors(status, [(_WORDING.get(failure, message), None)])


def reply(results: Sequence[ItemResult]) -> Reply:
    """The answer for a request's messages: 202 once any was accepted, else why not."""
    if any(result.accepted for result in results):
        return accepted(results[0].id)
    if all(result.expired for result in results):
        return failure(Failure.EXPIRED, "the deadline passed before a vendor accepted the message")
    several = len(results) > 1
    return errors(
        _STATUS[Failure.REJECTED],
        (
            (
                result.reason or "the message was refused",
                f"personalizations.{i}" if several else None,
            )
            for i, result in enumerate(results)
        ),
    )
