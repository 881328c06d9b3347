"""The Message dataclasses: size and recipient counts, errors, the spool encoding.

RICH, the sample message that the native and MIME tests also use, lives here
next to the dataclasses it fills.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from mailmux.message import (
    Address,
    Attachment,
    FieldError,
    InvalidMessage,
    Message,
    Original,
    from_payload,
    message_size,
    to_payload,
)
from mailmux.mime import render_mime

NOW = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
PDF = b"%PDF-1.4 fake report"


RICH = Message(
    sender=Address("john@bücher.de", "Jöhn Dœ"),
    to=(Address("alice@example.com"), Address("bob@example.com", "Bob, B.")),
    cc=(Address("carol@example.org", 'Doe, "Carol"'),),
    bcc=(Address("secret@example.net"),),
    reply_to=(Address("replies@example.com", "Replies"),),
    subject="Hello wörld",
    text="Hi there\n",
    html='<p>Hi <img src="cid:logo@x"></p>\n',
    headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
    attachments=(
        Attachment("logo.png", PNG, "image/png", inline=True, content_id="logo@x"),
        Attachment("Bericht Grüße.pdf", PDF, "application/pdf"),
    ),
    tags=("welcome", "spring"),
    metadata={"user_id": "42"},
    traffic_class="otp",
    deadline=NOW + 300,  # 01:05 at +01:00 is 00:05 UTC
    idempotency_key="order-1234",
)


def errors_of(call: Callable[[], object]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidMessage) as caught:
        call()
    return [(e.path, e.code) for e in caught.value.errors]


def test_message_size_counts_bodies_headers_and_decoded_attachments() -> None:
    message = Message(
        Address("a@example.com"),
        (Address("b@example.com", "Bé"),),
        subject="é",
        text="hello",
        headers={"X-A": "1"},
        attachments=(Attachment("f", bytes(1000)),),
    )
    addresses = (13 + 4) + (13 + 3 + 4)
    assert message_size(message) == 2 + 5 + addresses + (3 + 1 + 4) + (1000 + 1)
    assert message_size(dataclasses.replace(message, raw_mime=b"x" * 7)) == 7


# --- the spool encoding -------------------------------------------------------------------


def test_payload_round_trip_is_exact() -> None:
    message = dataclasses.replace(RICH, raw_mime=render_mime(RICH, now=NOW))
    assert from_payload(to_payload(message)) == message
    plain = Message(Address("a@example.com"), ())
    assert from_payload(to_payload(plain)) == plain


def test_payload_keeps_the_vendor_shaped_request_and_the_client() -> None:
    original = Original("sendgrid", "send", b'{"template_id": "d-1"}', "application/json", ("x",))
    message = dataclasses.replace(RICH, raw_mime=b"MIME", original=original, client="billing")

    again = from_payload(to_payload(message))

    assert again == message
    assert again.original is not None and again.original.body == original.body


def test_payload_of_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        from_payload(b'{"v": 99}')


def test_payload_keeps_attachment_bytes_as_they_are() -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB that base64 or JSON escaping would inflate
    message = dataclasses.replace(RICH, attachments=(Attachment("big.bin", blob),))
    payload = to_payload(message)
    assert blob in payload
    assert len(payload) < len(blob) + 2048
    assert from_payload(payload) == message


def test_a_version_1_payload_is_still_read() -> None:
    v1 = (
        b'{"v":1,"sender":["a@example.com",null],"to":[["b@example.com","B"]],"cc":[],'
        b'"bcc":[],"reply_to":[],"subject":"s","text":"x","html":null,"headers":{},'
        b'"attachments":[["a.png","iVBORw==","image/png",true,"logo@x"]],"tags":["t"],'
        b'"metadata":{},"class":"otp","deadline":null,"idempotency_key":null,'
        b'"raw_mime":"RnJvbTogYQ=="}'
    )
    message = from_payload(v1)
    assert message.attachments == (Attachment("a.png", b"\x89PNG", "image/png", True, "logo@x"),)
    assert (message.to, message.raw_mime, message.tags) == (
        (Address("b@example.com", "B"),),
        b"From: a",
        ("t",),
    )


def test_a_truncated_payload_is_refused() -> None:
    payload = to_payload(RICH)
    with pytest.raises(ValueError, match="do not add up"):
        from_payload(payload[:-3])


def test_field_error_string_form() -> None:
    assert str(FieldError("to[0]", "required", "missing")) == "to[0]: missing"
    assert str(FieldError("", "too_large", "too big")) == "too big"
