"""Request bodies that go on the wire without first being joined into one bytes object.

A vendor request that carries a large attachment would otherwise hold several
copies of it at once: the base64 text, orjson's output with that text inside
it (orjson reserves far more than it writes: ~250 MB for a 27 MB body), and a
copy of that output at its exact size. A `StreamedBody` is instead a list of
parts, written one after the other when the request is sent:

- `bytes`, sent as they are and never copied: JSON between attachments,
  multipart headers, an attachment's own `content` in a multipart body;
- `Base64View(data)`, the base64 text of `data`, encoded chunk by chunk while
  the request is written, so only one chunk of it exists at a time.

Its length is the sum of its parts' lengths, known before anything is
encoded, so the request carries an exact Content-Length (several ESPs and
proxies refuse chunked uploads). A body is immutable and `chunks()` starts
afresh on each call, so one request can be sent again on a retry.

Small bodies stay plain `bytes`, built exactly as before: the common 8 KB
message must not pay for large ones, and below `STREAM_FROM` (64 KiB) a copy
costs less than parts would. A JSON vendor writes each attachment with
`base64_text`, which is the base64 string itself for a small attachment and
a `Base64View` for one of 64 KiB or more; `json_body` streams a payload only
when it holds a view. A multipart body (`joined`) is streamed from 64 KiB on.
"""

from __future__ import annotations

import binascii
import hashlib
import secrets
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import orjson

#: Attachments (JSON) or bodies (multipart) of this many bytes or more are streamed.
STREAM_FROM = 64 * 1024
#: Bytes of input per written chunk: a multiple of 3, so the base64 of consecutive
#: chunks joins into the base64 of the whole, without padding in between.
CHUNK = 3 * 64 * 1024

#: Stands in for each Base64View while orjson writes the rest of a payload. Random per
#: process and never sent, so no content can contain it except by a 2⁻¹²⁸ accident.
_PLACEHOLDER = f"mailmux-base64-{secrets.token_hex(16)}"
_PLACEHOLDER_BYTES = _PLACEHOLDER.encode("ascii")


class Base64View:
    """The base64 text (standard alphabet, padded, no newlines) of `data`, not yet encoded.

    `json_body` writes one as that string. Not a dataclass: orjson would
    serialize a dataclass by itself instead of asking `json_body`.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return (len(self.data) + 2) // 3 * 4

    def __repr__(self) -> str:
        return f"Base64View(<{len(self.data)} bytes>)"

    def chunks(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, len(view), CHUNK):
            yield binascii.b2a_base64(view[start : start + CHUNK], newline=False)


#: One part of a streamed body.
Part = bytes | Base64View
#: An attachment's JSON object in a vendor payload: its content is what `base64_text` gave.
AttachmentEntry = dict[str, str | Base64View]


class StreamedBody:
    """A request body made of parts; `len()` is its size in bytes on the wire."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts: tuple[Part, ...] = tuple(parts)
        self.size = sum(map(len, self.parts))

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"StreamedBody(<{len(self.parts)} parts, {self.size} bytes>)"

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The body in order, in pieces of at most a few hundred KB, from the start.

        A large bytes part comes as memoryview slices, not copies: a transport
        that buffers what the socket did not take then copies a slice at most.
        """
        for part in self.parts:
            if isinstance(part, Base64View):
                yield from part.chunks()
            elif len(part) <= CHUNK:
                yield part
            else:
                view = memoryview(part)
                for start in range(0, len(view), CHUNK):
                    yield view[start : start + CHUNK]


#: A request body: plain bytes for small requests, parts for large ones.
Body = bytes | StreamedBody


def base64_text(data: bytes) -> str | Base64View:
    """What a JSON payload holds where the ESP wants `data` as base64: the string itself
    when `data` is small, else a view that `json_body` streams."""
    if len(data) < STREAM_FROM:
        return binascii.b2a_base64(data, newline=False).decode("ascii")
    return Base64View(data)


class _HoldsViews(Exception):
    """Raised from orjson's `default` on the first Base64View of a payload."""


def _refuse_views(value: Any) -> NoReturn:
    if isinstance(value, Base64View):
        raise _HoldsViews
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def json_body(payload: Any) -> Body:
    """`orjson.dumps(payload)`, with each `Base64View` in it written as its base64 string.

    A payload without views (nearly every message) is written once, as it
    always was. One with views is written again with a placeholder for each,
    and orjson's output is split there: the JSON pieces between the views
    become parts of a `StreamedBody`, so neither orjson nor a join ever holds
    the views' text.
    """
    try:
        return orjson.dumps(payload, default=_refuse_views)
    except orjson.JSONEncodeError as err:
        if not isinstance(err.__cause__, _HoldsViews):
            raise
    views: list[Base64View] = []

    def placeholder(value: Any) -> str:
        if isinstance(value, Base64View):
            views.append(value)  # orjson asks in output order
            return _PLACEHOLDER
        _refuse_views(value)

    pieces = orjson.dumps(payload, default=placeholder).split(_PLACEHOLDER_BYTES)
    if len(pieces) != len(views) + 1:  # the placeholder turned up in the content itself
        raise ValueError("a JSON payload contains the base64 placeholder")
    parts: list[Part] = [pieces[0]]
    for view, piece in zip(views, pieces[1:], strict=True):
        parts += (view, piece)
    return StreamedBody(parts)


def joined(parts: Sequence[bytes]) -> Body:
    """The parts as a `StreamedBody`, or joined into bytes when the body is under
    `STREAM_FROM` (one copy of a small body costs less than writing its parts)."""
    if len(parts) > 1 and sum(map(len, parts)) >= STREAM_FROM:
        return StreamedBody(parts)
    return b"".join(parts)


def sha256_hex(body: Body) -> str:
    """The SHA-256 of the body as it goes on the wire, hashed chunk by chunk (SigV4 needs it)."""
    if isinstance(body, bytes):
        return hashlib.sha256(body).hexdigest()
    digest = hashlib.sha256()
    for chunk in body.chunks():
        digest.update(chunk)
    return digest.hexdigest()
