"""SparkPost's answers, as mailmux's SparkPost ingress and emulator give them.

A success is `200 {"results": {"total_rejected_recipients", "total_accepted_recipients",
"id"}}`: the SDK returns the `results` object. An error is
`{"errors": [{"message", "description", "code"}]}` with SparkPost's extended error
codes (as strings); the SDK raises `SparkPostAPIException` for any status ≥ 400 and
never retries, so every status below is one its callers already handle.

How each `Failure` is answered:

====================  ======  ===================================================
failure               status  SparkPost error (code)
====================  ======  ===================================================
INVALID_JSON          422     "invalid data format/type" (1300), as SparkPost
                              answers a body it cannot parse or that is no object
INVALID_REQUEST       422     one error per problem: "required field is missing"
                              (1400), "invalid combination of fields" (1301),
                              "Invalid header" (3002), else "invalid data
                              format/type" (1300)
TOO_LARGE             422     "invalid data format/type" (1300): SparkPost's answer
                              to content over its size limit
UNAUTHORIZED          401     "Unauthorized." (no code), SparkPost's answer to a
FORBIDDEN             401     missing and to an unknown key alike
REJECTED, EXPIRED     400     "Message generation rejected" (1902)
UNAVAILABLE           503     "Message generation module not available" (1900):
                              SparkPost's "retry later"; nothing was accepted
IDEMPOTENCY_REUSED    422     "invalid combination of fields" (1301)
IDEMPOTENCY_IN_FLIGHT 409     "resource conflict" (no code): SparkPost has no
                              idempotency; 409 is its status for a conflict
====================  ======  ===================================================

A request that became several messages (one per recipient group) gets one answer,
as SparkPost gives one per transmission: 200 when any message was accepted
(sent or spooled), with the rejected ones counted in `total_rejected_recipients`
and listed in `rcpt_to_errors` next to SparkPost's "2000" warning, as SparkPost
answers a transmission created with some recipients refused. It stays a success
because some mail went out and a retry would send it twice. `id` is mailmux's id
of the first accepted message (every id is in `X-Mailmux-Message-Id`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus

from mailmux.message import FieldError
from mailmux.vendors.inbound import Failure, ItemResult, Reply, json_reply

#: One SparkPost error: (message, description or None, extended code or None).
Problem = tuple[str, str | None, str | None]

INVALID = "invalid data format/type"
MISSING = "required field is missing"
COMBINATION = "invalid combination of fields"
REJECTED = "Message generation rejected"
#: mailmux FieldError codes → SparkPost's message and extended code.
_FIELD_CODES: Mapping[str, tuple[str, str]] = {
    "required": (MISSING, "1400"),
    "mutually_exclusive": (COMBINATION, "1301"),
}
_HEADER_CODES = frozenset(
    {"header_injection", "invalid_header_name", "reserved_header", "duplicate_header"}
)
#: What an injected emulator fault says, per status: SparkPost's message and code.
_FAULTS: Mapping[int, tuple[str, str | None]] = {
    401: ("Unauthorized.", None),
    403: ("permission denied", "1100"),
    420: ("Exceed Sending Limit (hourly)", "2101"),
    429: ("Too many requests", None),
    503: ("Message generation module not available", "1900"),
}


def errors(status: int, problems: Sequence[Problem]) -> Reply:
    """SparkPost's error body; absent descriptions and codes are left out, as it does."""
    listed: list[dict[str, str]] = []
    for message, description, code in problems:
        error = {"message": message}
        if description is not None:
            error["description"] = description
        if code is not None:
            error["code"] = code
        listed.append(error)
    return json_reply(status, {"errors": listed})


def success(message_id: str, accepted: int, rejected: Sequence[tuple[int, str]] = ()) -> Reply:
    """200 with the transmission's results; `rejected` is (recipients, reason) per message."""
    results: dict[str, object] = {
        "total_rejected_recipients": sum(count for count, _ in rejected),
        "total_accepted_recipients": accepted,
        "id": message_id,
    }
    if not rejected:
        return json_reply(200, {"results": results})
    results["rcpt_to_errors"] = [
        {"message": REJECTED, "description": reason, "code": "1902"} for _, reason in rejected
    ]
    warning = {"message": "transmission created, but with validation errors", "code": "2000"}
    return json_reply(200, {"errors": [warning], "results": results})


def results_reply(results: Sequence[ItemResult]) -> Reply:
    """The answer for what became of a transmission's messages (see the module docstring)."""
    accepted = [r for r in results if r.accepted]
    refused = [(r.recipients, _reason(r)) for r in results if not r.accepted]
    if not accepted:
        return errors(400, [(REJECTED, reason, "1902") for _, reason in refused])
    return success(accepted[0].id, sum(r.recipients for r in accepted), refused)


def _reason(result: ItemResult) -> str:
    if result.expired:
        return f"{result.id}: its deadline passed before a vendor took it"
    return f"{result.id}: {result.reason or 'refused by every vendor'}"


def failure_reply(failure: Failure, message: str, problems: Sequence[FieldError] = ()) -> Reply:
    """A refused request in SparkPost's words (see the module docstring)."""
    if failure is Failure.INVALID_REQUEST:
        found = [field_problem(p) for p in problems] or [(INVALID, message, "1300")]
        return errors(422, found)
    if failure in (Failure.INVALID_JSON, Failure.TOO_LARGE):
        return errors(422, [(INVALID, message, "1300")])
    if failure in (Failure.UNAUTHORIZED, Failure.FORBIDDEN):
        return errors(401, [("Unauthorized.", None, None)])
    if failure in (Failure.REJECTED, Failure.EXPIRED):
        return errors(400, [(REJECTED, message, "1902")])
    if failure is Failure.UNAVAILABLE:
        return errors(503, [("Message generation module not available", message, "1900")])
    if failure is Failure.IDEMPOTENCY_REUSED:
        return errors(422, [(COMBINATION, message, "1301")])
    return errors(409, [("resource conflict", message, None)])  # IDEMPOTENCY_IN_FLIGHT


def field_problem(problem: FieldError) -> Problem:
    """One mailmux FieldError as SparkPost words a problem of that kind."""
    description = problem.message if problem.path in problem.message else str(problem)
    if problem.code in _HEADER_CODES and problem.path.startswith("content.headers"):
        return ("Invalid header", description, "3002")
    message, code = _FIELD_CODES.get(problem.code, (INVALID, "1300"))
    return (message, description, code)


def fault_reply(status: int) -> Reply:
    """An emulator's injected error status, as SparkPost words it."""
    message, code = _FAULTS.get(status, (_phrase(status), None))
    return errors(status, [(message, "emulated fault", code)])


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
