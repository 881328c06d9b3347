"""What was wrong with a request aiohttp could not parse, in words that carry none of its bytes.

aiohttp's parser errors quote the offending bytes: the request line with its
query string, or a header line with its value — an `Authorization` header
with a control character after the key puts the key into the exception's
message. mailmux never logs or echoes those messages. `describe` names the
problem in fixed words chosen by the exception's type and, for the generic
`BadHttpMessage`, by a few known opening phrases; anything else is
"malformed request". Matching the phrases only sharpens the wording: no
branch ever returns text taken from the exception.
"""

from __future__ import annotations

from aiohttp import http_exceptions as hx
from aiohttp.web_protocol import RequestPayloadError

# Opening phrases of BadHttpMessage messages (aiohttp's and llhttp's) → mailmux's words.
_PHRASES: tuple[tuple[str, str], ...] = (
    ("too many headers", "too many header fields"),
    ("duplicate ", "duplicate header field"),
    ("missing 'host'", "missing Host header"),
    ("invalid header", "bad header line"),
    ("invalid character in content-length", "bad Content-Length"),
    ("content-length", "bad Content-Length"),
    ("invalid character in chunk", "bad chunked body"),
    ("invalid chunk", "bad chunked body"),
    ("transfer-encoding", "bad Transfer-Encoding"),
    ("request has invalid `transfer-encoding`", "bad Transfer-Encoding"),
    ("bad line ending", "bad line ending"),
    ("data after `connection: close`", "data after Connection: close"),
    ("missing expected cr", "bad line ending"),
    ("missing expected lf", "bad line ending"),
    ("lone cr", "bad line ending"),
)


def describe(exc: BaseException) -> str:
    """A short description of a parse failure that contains nothing the client sent."""
    if isinstance(exc, hx.LineTooLong):
        return "request line or header field too long"
    if isinstance(exc, hx.BadHttpMethod):
        if exc.message.startswith("Received HTTPS traffic"):
            return "TLS handshake on the plain HTTP port"
        return "bad request method"
    if isinstance(exc, hx.InvalidURLError):
        return "bad request target"
    if isinstance(exc, hx.BadStatusLine):
        return "bad request line"
    if isinstance(exc, hx.InvalidHeader):
        return "bad header line"
    if isinstance(exc, hx.ContentEncodingError):
        return "bad Content-Encoding"
    if isinstance(exc, hx.TransferEncodingError):
        return "bad chunked body"
    if isinstance(exc, hx.ContentLengthError):
        return "body shorter than Content-Length"
    if isinstance(exc, RequestPayloadError):
        return "bad request body"
    if isinstance(exc, hx.HttpProcessingError):
        text = exc.message.lower()
        for phrase, words in _PHRASES:
            if text.startswith(phrase):
                return words
    return "malformed request"
