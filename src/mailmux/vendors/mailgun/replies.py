"""Mailgun's answers to a send, as its clients read them.

Mailgun's SDKs do not raise on an HTTP status: the official Python client
returns the `requests.Response` whatever it is, and its callers check
`resp.status_code` (or `resp.ok`, `raise_for_status()`) and read
`resp.json()["message"]`. So "the error the SDK handles" is the status and
body Mailgun itself gives:

===========================  ======  ============================================
Failure                      status  body
===========================  ======  ============================================
INVALID_JSON                 400     `{"message": …}` (Mailgun answers every form
INVALID_REQUEST              400     it cannot use with 400 and one `message`)
TOO_LARGE                    413     nginx's HTML page, as Mailgun's front answers
UNAUTHORIZED, FORBIDDEN      401     the bare text `Forbidden`, as Mailgun answers
                                     a missing or wrong key alike
REJECTED, EXPIRED            400     `{"message": …}`: permanent, and a status the
                                     SDK does not retry
UNAVAILABLE                  503     `{"message": …}`: the SDK retries it three
                                     times, which is right: nothing was accepted
IDEMPOTENCY_REUSED           400     `{"message": …}`: retrying cannot help
IDEMPOTENCY_IN_FLIGHT        429     `{"message": …}` with `Retry-After: 1`: the SDK
                                     waits and retries at most three times, by
                                     when the first request has usually finished
===========================  ======  ============================================

Success is 200 `{"id": "<…>", "message": "Queued. Thank you."}` for a sent
and a spooled message alike: Mailgun itself only ever says "queued".
"""

from __future__ import annotations

from mailmux.vendors.inbound import Failure, Reply, json_reply

QUEUED = "Queued. Thank you."
_TOO_LARGE_PAGE = (
    b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>413 Request Entity Too Large</h1></center>\r\n</body>\r\n</html>\r\n"
)
_STATUS = {
    Failure.INVALID_JSON: 400,
    Failure.INVALID_REQUEST: 400,
    Failure.REJECTED: 400,
    Failure.EXPIRED: 400,
    Failure.UNAVAILABLE: 503,
    Failure.IDEMPOTENCY_REUSED: 400,
    Failure.IDEMPOTENCY_IN_FLIGHT: 429,
}


def queued(message_id: str) -> Reply:
    """Mailgun's success: `message_id` in angle brackets, as Mailgun writes a Message-ID."""
    return json_reply(200, {"id": f"<{message_id}>", "message": QUEUED})


def forbidden() -> Reply:
    """A missing or wrong key: Mailgun answers 401 with plain `Forbidden`, not JSON."""
    return Reply(401, b"Forbidden", {"Content-Type": "text/plain; charset=utf-8"})


def error(status: int, message: str) -> Reply:
    """Any other refusal: `{"message": …}`."""
    return json_reply(status, {"message": message})


def failure_reply(failure: Failure, message: str) -> Reply:
    """The answer for a refused request (see the table in the module docstring)."""
    if failure in (Failure.UNAUTHORIZED, Failure.FORBIDDEN):
        return forbidden()
    if failure is Failure.TOO_LARGE:
        return Reply(413, _TOO_LARGE_PAGE, {"Content-Type": "text/html"})
    reply = error(_STATUS[failure], message)
    if failure is Failure.IDEMPOTENCY_IN_FLIGHT:
        return Reply(reply.status, reply.body, {**reply.headers, "Retry-After": "1"})
    return reply
