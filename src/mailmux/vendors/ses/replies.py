"""SES v2's answers, as botocore reads them: the success with mailmux's id, and errors.

Success is 200 `{"MessageId": …}` as JSON: boto3 returns that dict (plus
`ResponseMetadata`, whose `RequestId` comes from `x-amzn-RequestId`). Any
other body would still be a "success" to boto3 but without `MessageId`.

An error is its type in `x-amzn-ErrorType` and `{"__type", "message"}` in the
body: botocore takes the code from the header (the body's `__type` too), and
raises `client.exceptions.<Code>` for the codes SES v2's model has, a plain
`ClientError` for the others. How each `Failure` is answered, and why:

===================  ====================================  ===================================
failure              status, error type                    why
===================  ====================================  ===================================
INVALID_JSON,        400 BadRequestException               SES's answer to a request it cannot
INVALID_REQUEST                                            use; modeled, never retried.
  … too many         400 MessageRejected                   SES refuses the message itself
  recipients, too                                          ("Recipient count exceeds 50",
  large                                                    "Message length is more than …").
TOO_LARGE            400 MessageRejected                   as SES's 40 MB limit is answered.
UNAUTHORIZED         403 MissingAuthenticationToken-       AWS's answer to an unsigned request.
                     Exception
FORBIDDEN            403 SignatureDoesNotMatch             no client's key signs the request
                                                           (wrong secret, unknown key, or
                                                           signed more than 15 minutes off).
REJECTED, EXPIRED    400 MessageRejected                   the message was refused, for good.
UNAVAILABLE          503 ServiceUnavailable                nothing was accepted: botocore
                                                           retries it (3 attempts), rightly.
IDEMPOTENCY_REUSED,  409 ConflictException                 modeled by SES v2 and not retried,
IDEMPOTENCY_IN_                                            so a key reused for another body (or
FLIGHT                                                     still in flight) is not re-sent in
                                                           a loop.
===================  ====================================  ===================================

`fault_reply` words an emulated fault status the same way, so the emulator
and the ingress speak one dialect.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from http import HTTPStatus

from mailmux.message import FieldError
from mailmux.vendors.inbound import Failure, Reply, json_reply

#: FieldError codes that SES answers as a refused message rather than a bad request.
_REJECTED_CODES = frozenset({"too_many_recipients", "too_large"})
_FAILURES: dict[Failure, tuple[int, str]] = {
    Failure.INVALID_JSON: (400, "BadRequestException"),
    Failure.INVALID_REQUEST: (400, "BadRequestException"),
    Failure.TOO_LARGE: (400, "MessageRejected"),
    Failure.UNAUTHORIZED: (403, "MissingAuthenticationTokenException"),
    Failure.FORBIDDEN: (403, "SignatureDoesNotMatch"),
    Failure.REJECTED: (400, "MessageRejected"),
    Failure.EXPIRED: (400, "MessageRejected"),
    Failure.UNAVAILABLE: (503, "ServiceUnavailable"),
    Failure.IDEMPOTENCY_REUSED: (409, "ConflictException"),
    Failure.IDEMPOTENCY_IN_FLIGHT: (409, "ConflictException"),
}
#: What AWS itself says for these; mailmux's own wording is kept for the others.
_AWS_WORDS = {
    Failure.UNAUTHORIZED: "Missing Authentication Token",
    Failure.FORBIDDEN: (
        "The request signature we calculated does not match the signature you provided."
        " Check your AWS Secret Access Key and signing method, and that the request was"
        " signed within 15 minutes of the server's clock."
    ),
}
#: Error types SES answers these statuses with; other statuses get one from their phrase.
_FAULT_TYPES = {
    400: "BadRequestException",
    403: "AccessDeniedException",
    404: "NotFoundException",
    429: "TooManyRequestsException",
    500: "InternalFailure",
    503: "ServiceUnavailable",
}


def sent(message_id: str) -> Reply:
    """SendEmail's success: the message's id where SES puts its own."""
    return json_reply(200, {"MessageId": message_id}, {"x-amzn-RequestId": str(uuid.uuid4())})


def error(status: int, kind: str, message: str) -> Reply:
    """An SES error: the type in `x-amzn-ErrorType` and in the body's `__type`."""
    return json_reply(
        status,
        {"__type": kind, "message": message},
        {"x-amzn-ErrorType": kind, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def failure(failure: Failure, message: str, errors: Sequence[FieldError] = ()) -> Reply:
    """A refused request in SES's words (the table in the module docstring)."""
    status, kind = _FAILURES[failure]
    if errors and any(e.code in _REJECTED_CODES for e in errors):
        kind = "MessageRejected"
    text = "; ".join(map(str, errors)) if errors else _AWS_WORDS.get(failure, message)
    return error(status, kind, text)


def fault_reply(status: int, retry_after: float | None) -> Reply:
    """An emulated fault with the type SES answers that status with."""
    kind = _FAULT_TYPES.get(status) or _phrase(status).title().replace(" ", "") + "Exception"
    reply = error(status, kind, f"{_phrase(status)} (emulated fault)")
    if retry_after is None:
        return reply
    return Reply(
        reply.status, reply.body, {**reply.headers, "Retry-After": str(max(0, round(retry_after)))}
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
