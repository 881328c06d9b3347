"""Email address checks shared by every ingress and by MIME rendering.

Addresses arrive as JSON strings ("Name <addr>" or "addr"), JSON objects, SMTP
envelope arguments and parsed MIME headers; all of them end up here, so one
message has one meaning for "valid" whichever way it came in. email-validator
does the RFC work; the display-name split is ours because a JSON string is not
a header: `Jöhn Dœ <j@example.com>` and `Doe, John <j@example.com>` are
unambiguous there even though RFC 5322 would want them quoted.

Validation results are cached: the same few senders and recipients recur on
every request, and email-validator costs tens of microseconds per address.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, ValidatedEmail, validate_email

# Everything str.splitlines() breaks on (the email package refuses these in a header value,
# and a receiving MTA may honour them as line ends), plus NUL, which no header may carry.
_LINE_BREAK = re.compile("[\x00\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_QUOTED_PAIR = re.compile(r"\\(.)")


class AddressError(ValueError):
    """A mailbox that cannot be used; `code` is the FieldError code the caller reports."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def has_line_break(text: str) -> bool:
    """True if `text` would start a new header line (header injection) or holds a NUL."""
    return _LINE_BREAK.search(text) is not None


@lru_cache(maxsize=4096)
def _validate(addr: str) -> ValidatedEmail | str:
    """The validated address, or email-validator's reason it is not one."""
    try:
        return validate_email(addr, check_deliverability=False)
    except EmailNotValidError as err:
        return str(err)


def normalize(addr: str) -> str:
    """The normalized address (domain lower-cased, IDN domain in Unicode form)."""
    if has_line_break(addr):
        raise AddressError("header_injection", f"{addr!r} contains a line break or NUL")
    result = _validate(addr)
    if isinstance(result, str):
        raise AddressError("invalid_address", f"{addr!r} is not a valid email address: {result}")
    return result.normalized


def clean_name(name: str) -> str | None:
    """A display name ready for a header: surrounding blanks dropped, empty means none."""
    if has_line_break(name):
        raise AddressError("header_injection", f"display name {name!r} contains a line break")
    return name.strip() or None


def split_mailbox(text: str) -> tuple[str, str | None]:
    """`"Name <addr>"`, `"\\"Quoted, Name\\" <addr>"` or `"addr"` → (normalized addr, name)."""
    if has_line_break(text):
        raise AddressError("header_injection", f"{text!r} contains a line break or NUL")
    text = text.strip()
    if not (text.endswith(">") and "<" in text):
        return normalize(text), None
    start = text.rindex("<")
    name = text[:start].strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = _QUOTED_PAIR.sub(r"\1", name[1:-1])
    return normalize(text[start + 1 : -1].strip()), clean_name(name)


def ascii_email(addr: str) -> str | None:
    """`addr` as plain SMTP can carry it (IDN domain in punycode), or None if the local
    part is non-ASCII and the message needs SMTPUTF8."""
    if addr.isascii():
        return addr
    result = _validate(addr)
    return None if isinstance(result, str) else result.ascii_email


def ascii_domain(addr: str) -> str:
    """The domain of a normalized `addr` in its ASCII (punycode) form."""
    domain = addr.rpartition("@")[2]
    if domain.isascii():
        return domain
    result = _validate(addr)
    return domain if isinstance(result, str) else result.ascii_domain
