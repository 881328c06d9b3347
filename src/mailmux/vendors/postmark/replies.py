"""Postmark's answers, in its words: what postmarker returns on and raises on.

postmarker returns the JSON of any 2xx and raises `ClientError(error_code=…)`
for any other status with a JSON `{"ErrorCode", "Message"}` body (a body
without both keys would be a `KeyError`, a non-JSON one a bare `HTTPError`),
so every refusal here is that object. postmarker retries no status (urllib3
never retries a POST on status), which is what makes 429 safe for a request
whose idempotency key is still in flight: the caller decides when to retry.

How each `Failure` is answered:

=====================  ======  =========  ==================================================
failure                status  ErrorCode  why
=====================  ======  =========  ==================================================
INVALID_JSON           422     402        Postmark's "Invalid JSON".
INVALID_REQUEST        422     300        "Invalid email request"; 409 when the body is not
                                          typed JSON, 403 when the JSON is not a message (or
                                          batch), 410 for more than 500 batch messages, as
                                          Postmark codes them (the first error decides).
TOO_LARGE              413     300        Postmark's status for a body over its size limit.
UNAUTHORIZED           401     10         No server token in X-Postmark-Server-Token.
FORBIDDEN              401     10         Postmark answers an unknown token 401 too.
REJECTED               422     300 / 406  406 when the vendors' reason is inactive or
                                          suppressed recipients, else 300.
EXPIRED                422     300        The caller's deadline passed: sending later would
                                          be wrong, so not a retriable status.
UNAVAILABLE            503     100        "Maintenance": nothing was accepted, retry later.
IDEMPOTENCY_REUSED     422     300        The request is invalid under this key.
IDEMPOTENCY_IN_FLIGHT  429     429        Retry later: the same key then gets the replay.
=====================  ======  =========  ==================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mailmux.message import FieldError
from mailmux.vendors.inbound import Failure, ItemResult, Reply, json_reply

#: Postmark's API error codes that mailmux answers with.
TOKEN_ERROR = 10
MAINTENANCE = 100
INVALID_EMAIL = 300
INVALID_JSON = 402
INCOMPATIBLE_JSON = 403
INACTIVE_RECIPIENT = 406
JSON_REQUIRED = 409
TOO_MANY_BATCH_MESSAGES = 410
RATE_LIMIT = 429

#: FieldError codes (set by the inbound parser) that Postmark answers with a code of its own.
_CODES_BY_ERROR = {
    "json_required": JSON_REQUIRED,
    "incompatible_json": INCOMPATIBLE_JSON,
    "too_many_messages": TOO_MANY_BATCH_MESSAGES,
}
_FAILURES: dict[Failure, tuple[int, int]] = {
    Failure.INVALID_JSON: (422, INVALID_JSON),
    Failure.INVALID_REQUEST: (422, INVALID_EMAIL),
    Failure.TOO_LARGE: (413, INVALID_EMAIL),
    Failure.UNAUTHORIZED: (401, TOKEN_ERROR),
    Failure.FORBIDDEN: (401, TOKEN_ERROR),
    Failure.REJECTED: (422, INVALID_EMAIL),
    Failure.EXPIRED: (422, INVALID_EMAIL),
    Failure.UNAVAILABLE: (503, MAINTENANCE),
    Failure.IDEMPOTENCY_REUSED: (422, INVALID_EMAIL),
    Failure.IDEMPOTENCY_IN_FLIGHT: (429, RATE_LIMIT),
}
#: Postmark's own words where it has them.
_WORDS = {
    Failure.UNAUTHORIZED: (
        "No Account or Server API tokens were supplied in the HTTP headers. Please add a header"
        " for either X-Postmark-Server-Token or X-Postmark-Account-Token."
    ),
    Failure.FORBIDDEN: (
        "The Server Token you provided in the X-Postmark-Server-Token request header was"
        " invalid. Please verify that you are using a valid token."
    ),
}
_QUEUED = "Message accepted, but delivery may be delayed."


def error_document(code: int, message: str) -> dict[str, Any]:
    return {"ErrorCode": code, "Message": message}


def failure_reply(failure: Failure, message: str, errors: Sequence[FieldError] = ()) -> Reply:
    """Postmark's refusal of a whole request."""
    status, code = _FAILURES[failure]
    if failure is Failure.REJECTED:
        code = rejection_code(message)
    elif errors:
        code = _CODES_BY_ERROR.get(errors[0].code, code)
    headers = {"Retry-After": "1"} if failure is Failure.IDEMPOTENCY_IN_FLIGHT else None
    return json_reply(status, error_document(code, _WORDS.get(failure, message)), headers)


def rejection_code(reason: str) -> int:
    """406 when the vendors refused the recipients as inactive or suppressed, else 300."""
    lowered = reason.lower()
    inactive = "inactive" in lowered or "suppress" in lowered
    return INACTIVE_RECIPIENT if inactive else INVALID_EMAIL


def sent_document(result: ItemResult, to: str | None = None) -> dict[str, Any]:
    """Postmark's 200 for one message; `To` only where the request's own To is known."""
    document: dict[str, Any] = {} if not to else {"To": to}
    document["SubmittedAt"] = datetime.now(UTC).isoformat(timespec="microseconds")
    document["MessageID"] = result.id
    document["ErrorCode"] = 0
    document["Message"] = _QUEUED if result.queued else "OK"
    return document


def item_document(result: ItemResult, to: str | None = None) -> dict[str, Any]:
    """One entry of a batch answer: sent, or the item's own error."""
    if result.accepted:
        return sent_document(result, to)
    if result.expired:
        return error_document(INVALID_EMAIL, _expired(result))
    return error_document(rejection_code(result.reason), _rejected(result))


def single_reply(result: ItemResult, to: str | None = None) -> Reply:
    """The answer to `/email` (or `/email/withTemplate`): 200, or the refusal."""
    if result.accepted:
        return json_reply(200, sent_document(result, to))
    if result.expired:
        return failure_reply(Failure.EXPIRED, _expired(result))
    return failure_reply(Failure.REJECTED, _rejected(result))


def batch_reply(results: Sequence[ItemResult], to: Sequence[str | None] = ()) -> Reply:
    """The answer to a batch: always 200, one entry per message in request order."""
    shown = list(to) or [None] * len(results)
    return json_reply(200, [item_document(r, t) for r, t in zip(results, shown, strict=True)])


def _expired(result: ItemResult) -> str:
    return f"Not sent: its deadline passed before a vendor took it ({result.id})."


def _rejected(result: ItemResult) -> str:
    return f"Every vendor refused the message ({result.id}): {result.reason or 'no reason given'}"
