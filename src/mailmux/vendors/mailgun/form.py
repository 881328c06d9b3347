"""Mailgun's request bodies read from bytes: a form, multipart/form-data or urlencoded.

Mailgun's clients send a form, never JSON: multipart when there are files
(the official Python SDK, mailgun.js, curl `-F`), urlencoded otherwise (the
Python SDK without files). Both arrive here whole, as bytes, because the
ingress reads the body before it parses it and the emulator stores it; so
the parser is a push parser fed once (`multipart`, the one Bottle uses),
not aiohttp's streaming reader.

Fields keep their order and repeats: `to`, `o:tag` and `attachment` are
repeated by design, and whether a repeat of another field matters is the
caller's business. Anything that is not a well-formed form (a broken
boundary, a part without a name, text that is not in its charset, another
content type) raises `FormError`: nothing of such a body is trusted.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from urllib.parse import parse_qsl

from multipart import (  # type: ignore[import-untyped]  # ships no type hints
    MultipartError,
    MultipartSegment,
    PushMultipartParser,
    parse_options_header,
)

MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
#: More fields than any message needs (1000 recipients, headers, variables, files):
#: a bound on the work a hostile body can ask for.
MAX_FIELDS = 10_000
_MAX_PART_HEADERS = 8  # RFC 7578 allows three (Content-Disposition, -Type, -Transfer-Encoding)


class FormError(ValueError):
    """The body is not a form Mailgun could read."""


@dataclass(frozen=True, slots=True)
class FormField:
    """One field: `value` is text for a text field, the bytes for a file part."""

    name: str
    value: str | bytes
    filename: str | None = None  # set for a file part (possibly "")
    content_type: str | None = None  # a file part's own type, lower-cased, no parameters


def read_form(body: bytes, content_type: str) -> list[FormField]:
    """Every field of `body`, in order, by its request's Content-Type."""
    media, options = parse_options_header(content_type)
    if media == MULTIPART:
        boundary = options.get("boundary")
        if not boundary:
            raise FormError("a multipart/form-data body needs a boundary in its Content-Type")
        return _multipart(body, boundary)
    if media == URLENCODED:
        return _urlencoded(body)
    raise FormError(
        f"the content type {content_type or 'none'!r} is not a form:"
        f" send {MULTIPART} or {URLENCODED}"
    )


def _multipart(body: bytes, boundary: str) -> list[FormField]:
    fields: list[FormField] = []
    segment: MultipartSegment | None = None
    chunks: list[bytes] = []
    try:
        with PushMultipartParser(
            boundary,
            content_length=len(body),
            max_header_count=_MAX_PART_HEADERS,
            max_segment_count=MAX_FIELDS,
        ) as parser:
            for event in parser.parse(body):
                if isinstance(event, MultipartSegment):
                    segment, chunks = event, []
                elif event is not None:
                    chunks.append(event)
                elif segment is not None:
                    fields.append(_field(segment, b"".join(chunks)))
        # Leaving the block closes the parser, which raises if the body ended early.
    except MultipartError as err:
        raise FormError(f"the multipart body cannot be read: {err}") from err
    return fields


def _field(segment: MultipartSegment, content: bytes) -> FormField:
    name = segment.name
    if segment.disposition != "form-data" or not name:
        raise FormError("a part without a form-data field name")
    if segment.filename is not None:
        return FormField(name, content, segment.filename, segment.content_type)
    charset = segment.charset or "utf-8"
    try:
        return FormField(name, codecs.decode(content, charset))
    except (LookupError, UnicodeDecodeError) as err:
        raise FormError(f"the field {name!r} is not text in {charset!r}") from err


def _urlencoded(body: bytes) -> list[FormField]:
    try:
        pairs = parse_qsl(
            body.decode(),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError as err:  # UnicodeDecodeError is one; so is "too many fields"
        raise FormError(f"the form cannot be read: {err}") from err
    return [FormField(name, value) for name, value in pairs]
