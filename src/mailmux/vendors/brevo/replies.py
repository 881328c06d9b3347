"""Brevo's answers to `POST /v3/smtp/email`, worded for mailmux's results and refusals.

Success is 201 `{"messageId": "<id@domain>"}`, or `{"messageIds": [...]}` for
a request with `messageVersions`; the id is mailmux's message id written as
a Message-ID, as Brevo writes its own. Errors are `{"code", "message"}`.

brevo-python raises `BadRequestError` on 400 and a plain `ApiError` on every
other status, and it resends the same body twice more on 408, 409, 429 and
5xx. So every refusal of the request itself is a 400 (not retried), an
idempotency conflict included (Brevo's own `duplicate_parameter`, never 409),
and only "nothing was accepted" is a 503, where the SDK's retry is right:

=====================  ======  =====================  ================================
Failure                status  code                   why
=====================  ======  =====================  ================================
INVALID_JSON           400     bad_request            Brevo's text for broken JSON.
INVALID_REQUEST        400     missing_parameter or   From the first problem: a missing
                               invalid_parameter      field is `missing_parameter`.
TOO_LARGE              400     invalid_parameter      BadRequestError, not retried.
UNAUTHORIZED           401     unauthorized           "authentication not found in
                                                      headers", Brevo's text.
FORBIDDEN              401     unauthorized           "Key not found": Brevo answers an
                                                      unknown key with 401, not 403.
REJECTED               400     invalid_parameter      Every vendor refused the message.
EXPIRED                400     invalid_parameter      Its deadline passed; resending the
                                                      same request cannot help.
UNAVAILABLE            503     service_unavailable    Neither sent nor spooled: retry.
IDEMPOTENCY_REUSED     400     duplicate_parameter    Brevo's code for a reused key.
IDEMPOTENCY_IN_FLIGHT  400     duplicate_parameter    Not 409: the SDK would retry it.
=====================  ======  =====================  ================================

A request of several versions has no per-version answer at Brevo: it is
201 with every id, in version order, when at least one version was accepted
(some mail went out, so an error would make the caller resend all of it;
each id can be looked up with `GET /v1/messages/{id}`), and the rejection
shape when none was. mailmux answers from the results alone, without the
request body, so a single message's answer carries both `messageId` and a
one-id `messageIds` (Brevo sends one or the other): right for a plain send
and for a request of one version alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailmux.message import FieldError
from mailmux.vendors.inbound import Failure, ItemResult, Reply, json_reply

MISSING = "missing_parameter"
INVALID = "invalid_parameter"

_FIXED: dict[Failure, tuple[int, str, str | None]] = {
    Failure.INVALID_JSON: (400, "bad_request", "Input must be a valid JSON object"),
    Failure.TOO_LARGE: (400, INVALID, None),
    Failure.UNAUTHORIZED: (401, "unauthorized", "authentication not found in headers"),
    Failure.FORBIDDEN: (401, "unauthorized", "Key not found"),
    Failure.REJECTED: (400, INVALID, None),
    Failure.EXPIRED: (400, INVALID, None),
    Failure.UNAVAILABLE: (503, "service_unavailable", None),
    Failure.IDEMPOTENCY_REUSED: (400, "duplicate_parameter", None),
    Failure.IDEMPOTENCY_IN_FLIGHT: (400, "duplicate_parameter", None),
}


def error_reply(status: int, code: str, message: str) -> Reply:
    """Brevo's error body."""
    return json_reply(status, {"code": code, "message": message})


def failure_reply(failure: Failure, message: str, errors: Sequence[FieldError] = ()) -> Reply:
    """The answer to a refused request (see the table above)."""
    if failure is Failure.INVALID_REQUEST:
        code = MISSING if errors and errors[0].code == "required" else INVALID
        text = "; ".join(map(str, errors)) if errors else message
        return error_reply(400, code, text)
    status, code, fixed = _FIXED[failure]
    return error_reply(status, code, fixed or message)


def success_reply(results: Sequence[ItemResult], *, versions: bool | None, id_domain: str) -> Reply:
    """201 with the ids, or the rejection of the first failure when nothing was accepted.

    `versions` says whether the request used `messageVersions`; None when that
    is not known (mailmux's ingress answers from the results alone): several
    results are versions, and a single one is given both as `messageId` and as
    `messageIds`, so a caller that sent one version finds its list.
    """
    if not any(result.accepted for result in results):
        first = results[0]
        if first.expired:
            why = f"not sent: its deadline passed before a vendor took it ({first.reason})"
            return failure_reply(Failure.EXPIRED, why)
        return failure_reply(Failure.REJECTED, f"not sent: {first.reason or 'refused'}")
    ids = [f"<{result.id}@{id_domain}>" for result in results]
    if versions or (versions is None and len(ids) > 1):
        return json_reply(201, {"messageIds": ids})
    if versions is None:
        return json_reply(201, {"messageId": ids[0], "messageIds": ids})
    return json_reply(201, {"messageId": ids[0]})
