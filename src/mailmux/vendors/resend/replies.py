"""Resend's answers, as mailmux words them: successes with mailmux's ids, and errors.

Every error is `{"statusCode", "message", "name"}` (the order Resend's own
answers use) with `Content-Type: application/json`, and its `name` is one of
Resend's error names, because the Python SDK picks its exception from the
HTTP status and that name. A success body never holds `statusCode`: the SDK
would read it as an error.

How each `Failure` is answered, and the exception the SDK (resend 2.52) raises:

====================  ======  ==============================  ============================
failure               status  name                            SDK exception
====================  ======  ==============================  ============================
INVALID_JSON          400     validation_error                ValidationError
INVALID_REQUEST       422     missing_required_field,         MissingRequiredFieldsError,
                              validation_error                ValidationError
                      422     invalid_attachment              ResendError (as at Resend)
                      400     invalid_idempotency_key         ResendError (as at Resend)
TOO_LARGE             413     validation_error                ResendError (Resend documents
                                                              no size error; 413 is what a
                                                              proxy in front of it says)
UNAUTHORIZED          401     missing_api_key                 MissingApiKeyError
FORBIDDEN             403     invalid_api_key                 InvalidApiKeyError
REJECTED, EXPIRED     422     validation_error                ValidationError
UNAVAILABLE           500     application_error               ApplicationError
IDEMPOTENCY_REUSED    409     invalid_idempotent_request      ResendError
IDEMPOTENCY_IN_FLIGHT 409     concurrent_idempotent_requests  ResendError
====================  ======  ==============================  ============================

UNAVAILABLE is Resend's "unexpected error" (500 application_error) rather than
a 503 Resend never documents: it is the status Resend's callers already treat
as "nothing happened, try again later", and the SDK never retries on its own,
so no status here can make it loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from mailmux.message import FieldError
from mailmux.vendors.inbound import Failure, ItemResult, Reply, json_reply

#: Resend's own error names a FieldError code may already be.
RESEND_NAMES = frozenset(
    {"missing_required_field", "validation_error", "invalid_attachment"}
    | {"invalid_from_address", "invalid_idempotency_key", "invalid_parameter"}
)
#: Shared field-rule codes that Resend names more precisely than `validation_error`.
_CODE_NAMES: Mapping[str, str] = {
    "invalid_base64": "invalid_attachment",
    "invalid_filename": "invalid_attachment",
    "invalid_content_id": "invalid_attachment",
    "invalid_content_type": "invalid_attachment",
}
#: A FieldError path's top-level field: `[2].attachments[0].content` → `attachments`.
_FIELD = re.compile(r"(?:\[\d+\]\.)?([^.\[]*)")
_FIXED: Mapping[Failure, tuple[int, str, str | None]] = {
    Failure.INVALID_JSON: (400, "validation_error", None),
    Failure.TOO_LARGE: (413, "validation_error", None),
    Failure.UNAUTHORIZED: (401, "missing_api_key", "Missing API key in the authorization header."),
    Failure.FORBIDDEN: (403, "invalid_api_key", "API key is invalid."),
    Failure.REJECTED: (422, "validation_error", None),
    Failure.EXPIRED: (422, "validation_error", None),
    Failure.UNAVAILABLE: (500, "application_error", None),
    Failure.IDEMPOTENCY_REUSED: (
        409,
        "invalid_idempotent_request",
        "Same idempotency key used with a different request payload.",
    ),
    Failure.IDEMPOTENCY_IN_FLIGHT: (
        409,
        "concurrent_idempotent_requests",
        "Same idempotency key used while original request is still in progress.",
    ),
}


def error(status: int, name: str, message: str) -> Reply:
    """One Resend error body."""
    return json_reply(status, {"statusCode": status, "message": message, "name": name})


def failure(failure: Failure, message: str, errors: Sequence[FieldError] = ()) -> Reply:
    """The Resend error for a refused request (see the table above)."""
    if failure is Failure.INVALID_REQUEST:
        return _invalid(message, errors)
    status, name, fixed = _FIXED[failure]
    return error(status, name, fixed or message)


def _invalid(message: str, errors: Sequence[FieldError]) -> Reply:
    if not errors:
        # The generic ingress refuses a malformed Idempotency-Key with no field error.
        if "Idempotency-Key" in message:
            return error(400, "invalid_idempotency_key", message)
        return error(422, "validation_error", message)
    name = error_name(errors[0].code)
    return error(400 if name == "invalid_idempotency_key" else 422, name, message)


def error_name(code: str) -> str:
    """The Resend error name for a FieldError code."""
    if code in RESEND_NAMES:
        return code
    return _CODE_NAMES.get(code, "validation_error")


def describe(problem: FieldError) -> str:
    """A FieldError in Resend's words: Resend's own sentence, or the field and the problem."""
    if problem.code in RESEND_NAMES:
        return problem.message
    field = _FIELD.match(problem.path)
    if field is None or not field.group(1):  # the email as a whole, or the batch
        return problem.message
    return f"Invalid `{field.group(1)}` field: {problem.message}."


def sent(endpoint: str, results: Sequence[ItemResult]) -> Reply:
    """The answer once every message was handed to a vendor or spooled, or failed.

    `emails`: `{"id"}`, or the rejection when it failed. `batch`: Resend's
    `{"data": [{"id"}, ...]}`; when only some failed, the permissive-mode
    answer, 200 with `data` listing the accepted ones and `errors` the failed
    ones by index (the accepted ones went out: an error would make the caller
    send them again). When every message failed, the rejection of the first.
    """
    accepted = [r for r in results if r.accepted]
    if endpoint != "batch" or not accepted:
        first = results[0]
        if first.accepted:
            return json_reply(200, {"id": first.id})
        return failure(Failure.EXPIRED if first.expired else Failure.REJECTED, _not_sent(first))
    document: dict[str, object] = {"data": [{"id": r.id} for r in accepted]}
    if len(accepted) < len(results):
        document["errors"] = [
            {"index": index, "message": _not_sent(r)}
            for index, r in enumerate(results)
            if not r.accepted
        ]
    return json_reply(200, document)


def _not_sent(result: ItemResult) -> str:
    if result.expired:
        return f"The email {result.id} was not sent before its deadline."
    return f"The email {result.id} was refused by every provider: {result.reason or 'rejected'}"
