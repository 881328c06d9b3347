"""Every reply mailmux's SMTP server writes itself, by name (RFC 5321 codes with RFC 3463
enhanced status codes).

The first digit is the promise made to the client: 2 — the message is with an ESP or
in the spool; 4 — nothing was taken, try again later; 5 — nothing was taken, and trying
again unchanged will not help. Replies with a `{}` take a detail with `format`; a detail
passes through `one_line` first, because a reply is one line of ASCII and the detail may
quote what the client sent.
"""

from __future__ import annotations

import re

SENDER_OK = "250 2.1.0 Ok"
RECIPIENT_OK = "250 2.1.5 Ok"
#: After DATA: an ESP accepted the message, or the spool holds it. `{}`: mailmux's id.
QUEUED = "250 2.0.0 Ok: queued as {}"

AUTH_REQUIRED = "530 5.7.0 Authentication required"
TLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_THROTTLED = "454 4.7.0 Too many failed authentication attempts, try again later"

BAD_SENDER = "501 5.1.7 Bad sender address syntax: {}"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax: {}"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"

#: RFC 5321 §2.3.8: a line ends with CRLF only. A bare CR or LF passed on to a relay can
#: end the DATA early there (SMTP smuggling), so the message is refused.
BARE_LINE_END = "554 5.6.0 Message refused: bare CR or LF; lines must end with CRLF"
NUL_BYTE = "554 5.6.0 Message refused: it contains NUL bytes"
INVALID_MESSAGE = "554 5.6.0 Invalid message: {}"
TOO_LARGE = "552 5.3.4 Message too big: {}"
#: A vendor refused the message itself; `{}`: mailmux's id, then the vendor's reason.
FAILED = "550 5.0.0 Message {} rejected: {}"
EXPIRED = "554 5.4.7 Message {} expired: its deadline passed before any vendor took it"

#: No vendor took it and the spool could not store it: nothing was accepted.
UNAVAILABLE = "451 4.3.0 Cannot accept the message now, try again later"
LOCAL_ERROR = "451 4.3.0 Local error in processing, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
#: A new connection beyond `limits.max_connections`, which is closed at once.
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"

_MAX_DETAIL = 400
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(detail: str) -> str:
    """`detail` as printable ASCII on one line, cut to a length any client shows."""
    text = _CONTROL.sub(" ", detail.encode("ascii", "backslashreplace").decode("ascii")).strip()
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
