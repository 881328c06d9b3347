"""describe(): what was wrong with a request, in words that carry none of its bytes."""

from __future__ import annotations

import pytest
from aiohttp import http_exceptions as hx
from aiohttp.web_protocol import RequestPayloadError

from mailmux.ingress.malformed import describe

SECRET = "Bearer mm-live-secret"
RAW = SECRET.encode()


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (hx.LineTooLong(RAW + b"...", 8190), "request line or header field too long"),
        (hx.BadHttpMethod(SECRET), "bad request method"),
        (
            hx.BadHttpMethod(error="Received HTTPS traffic on an HTTP port"),
            "TLS handshake on the plain HTTP port",
        ),
        (hx.InvalidURLError(f"Invalid char in url path: {SECRET}"), "bad request target"),
        (hx.BadStatusLine(SECRET), "bad request line"),
        (hx.InvalidHeader(RAW), "bad header line"),
        (hx.TransferEncodingError(SECRET), "bad chunked body"),
        (hx.ContentLengthError(SECRET), "body shorter than Content-Length"),
        (RequestPayloadError(SECRET), "bad request body"),
        (hx.BadHttpMessage(f"Invalid header value char:\n\n  {RAW!r}"), "bad header line"),
        (hx.BadHttpMessage("Too many headers received"), "too many header fields"),
        (hx.BadHttpMessage(f"Invalid character in Content-Length: {SECRET}"), "bad Content-Length"),
        (hx.BadHttpMessage(f"Something new: {SECRET}"), "malformed request"),
        (ValueError(SECRET), "malformed request"),
    ],
)
def test_each_parse_failure_gets_fixed_words(exc: BaseException, words: str) -> None:
    assert describe(exc) == words
    assert "secret" not in describe(exc)
