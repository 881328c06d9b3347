"""render_mime and parse_mime: RFC 5322 out to vendors and in from SMTP clients."""

from __future__ import annotations

import dataclasses
from email import policy
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from typing import Any

import pytest
from test_message import NOW, PDF, PNG, RICH, errors_of

from mailmux.message import (
    DEFAULT_TRAFFIC_CLASS,
    Address,
    Attachment,
    InvalidMessage,
    Message,
    MessageLimits,
)
from mailmux.mime import parse_mime, render_mime

# --- render_mime --------------------------------------------------------------------------


def rendered(message: Message, **kwargs: Any) -> EmailMessage:
    raw = render_mime(message, now=NOW, message_id="m1@mailmux.test", **kwargs)
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return parsed


def structure(part: MIMEPart) -> object:
    if part.is_multipart():
        return (part.get_content_type(), [structure(p) for p in part.iter_parts()])
    return part.get_content_type()


def test_render_mime_headers() -> None:
    mime = rendered(RICH)
    assert mime["From"] == "Jöhn Dœ <john@xn--bcher-kva.de>"  # IDN domain in punycode
    assert [a.addr_spec for a in mime["To"].addresses] == ["alice@example.com", "bob@example.com"]
    assert [a.display_name for a in mime["Cc"].addresses] == ['Doe, "Carol"']
    assert mime["Reply-To"] == "Replies <replies@example.com>"
    assert mime["Subject"] == "Hello wörld"
    assert mime["Message-ID"] == "<m1@mailmux.test>"
    assert mime["Date"].datetime.timestamp() == NOW
    assert (mime["X-Campaign"], mime["List-Unsubscribe"]) == ("spring", "<mailto:u@example.com>")
    assert mime["Bcc"] is None
    raw = render_mime(RICH, now=NOW)
    for private in (b"secret@example.net", b"welcome", b"user_id", b"otp"):
        assert private not in raw


def test_a_bcc_only_message_says_undisclosed_recipients_and_names_none() -> None:
    hidden = (Address("secret@example.net"), Address("boss@example.net", "Boss"))
    message = dataclasses.replace(RICH, to=(), cc=(), bcc=hidden)
    mime = rendered(message)
    assert (mime["To"].groups[0].display_name, mime["To"].addresses) == (
        "undisclosed-recipients",
        (),
    )
    assert mime["Cc"] is None and mime["Bcc"] is None
    raw = render_mime(message, now=NOW)
    assert b"secret@" not in raw and b"boss@" not in raw and b"Boss" not in raw
    envelope = [a.email for a in hidden]
    assert parse_mime(raw, envelope_to=envelope).to == ()  # the group holds nobody


def test_a_cc_only_message_has_no_to_field() -> None:
    mime = rendered(dataclasses.replace(RICH, to=()))
    assert mime["To"] is None
    assert [a.addr_spec for a in mime["Cc"].addresses] == ["carol@example.org"]


def test_render_mime_structure() -> None:
    mime = rendered(RICH)
    assert structure(mime) == (
        "multipart/mixed",
        [
            (
                "multipart/alternative",
                [
                    "text/plain",
                    ("multipart/related", ["text/html", "image/png"]),
                ],
            ),
            "application/pdf",
        ],
    )
    image = next(p for p in mime.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<logo@x>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == PNG
    report = next(p for p in mime.walk() if p.get_content_type() == "application/pdf")
    assert report.get_content_disposition() == "attachment"
    assert (report.get_filename(), report.get_content()) == ("Bericht Grüße.pdf", PDF)


def test_render_mime_single_bodies() -> None:
    html_only = dataclasses.replace(RICH, text=None, attachments=())
    assert structure(rendered(html_only)) == "text/html"
    text_only = dataclasses.replace(RICH, html=None, attachments=RICH.attachments[1:])
    assert structure(rendered(text_only)) == ("multipart/mixed", ["text/plain", "application/pdf"])


def test_render_mime_generates_a_message_id_in_the_senders_domain() -> None:
    mime = BytesParser(policy=policy.default).parsebytes(render_mime(RICH))
    assert str(mime["Message-ID"]).endswith("@xn--bcher-kva.de>")


def test_render_mime_uses_smtputf8_only_for_a_non_ascii_local_part() -> None:
    assert render_mime(RICH, now=NOW).isascii()
    utf8 = dataclasses.replace(RICH, to=(Address("jöhn@bücher.de", "Jöhn"),))
    raw = render_mime(utf8, now=NOW)
    assert "jöhn@bücher.de".encode() in raw and "Jöhn Dœ".encode() in raw


def test_render_mime_keeps_an_rfc822_attachment_readable() -> None:
    inner = b"From: a@example.com\r\nSubject: forwarded\r\n\r\nbody\r\n"
    message = dataclasses.replace(
        RICH, attachments=(Attachment("fwd.eml", inner, "message/rfc822"),)
    )
    part = next(p for p in rendered(message).walk() if p.get_content_type() == "message/rfc822")
    assert part["Content-Transfer-Encoding"] != "base64"
    assert part.get_content()["Subject"] == "forwarded"
    parsed = parse_mime(render_mime(message), envelope_to=["alice@example.com"])
    assert parsed.attachments == (Attachment("fwd.eml", inner, "message/rfc822"),)


def test_render_mime_returns_raw_mime_unchanged() -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\n\r\nexactly this\r\n"
    assert render_mime(dataclasses.replace(RICH, raw_mime=raw)) is raw


# --- parse_mime ---------------------------------------------------------------------------


def test_parse_mime_of_render_mime_gives_back_the_same_fields() -> None:
    raw = render_mime(RICH, now=NOW)
    envelope = [a.email for a in (*RICH.to, *RICH.cc, *RICH.bcc)]
    parsed = parse_mime(raw, envelope_from="bounces@bücher.de", envelope_to=envelope)
    assert parsed.raw_mime == raw
    # Tags, metadata, class, deadline and idempotency key have no place in MIME.
    assert parsed == dataclasses.replace(
        RICH,
        tags=(),
        metadata={},
        traffic_class=DEFAULT_TRAFFIC_CLASS,
        deadline=None,
        idempotency_key=None,
        raw_mime=raw,
    )


def test_parse_mime_normalizes_body_line_ends() -> None:
    message = dataclasses.replace(RICH, text="one\r\ntwo", html=None, attachments=())
    parsed = parse_mime(render_mime(message), envelope_to=["alice@example.com"])
    assert parsed.text == "one\ntwo\n"


SUBMITTED = (
    b"From: App <app@example.com>\r\n"
    b"To: Team <team@example.com>, alice@example.com\r\n"
    b"Bcc: hidden@example.com,\r\n boss@example.com\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\n"
    b"Received: from client by relay\r\n"
    b"X-Mailmux-Class: otp\r\n"
    b"X-Mailmux-Deadline: 60\r\n"
    b"X-Trace: kept\r\n"
    b"X-Trace: second copy\r\n"
    b"\r\n"
    b"body\r\n"
)


def test_parse_mime_without_envelope_uses_the_headers() -> None:
    message = parse_mime(SUBMITTED, now=NOW)
    assert message.sender == Address("app@example.com", "App")
    assert message.to == (Address("team@example.com", "Team"), Address("alice@example.com"))
    assert message.bcc == (Address("hidden@example.com"), Address("boss@example.com"))
    assert (message.subject, message.text) == ("Résumé", "body\n")
    assert message.headers == {"X-Trace": "kept"}  # trace and control headers are not carried
    assert (message.traffic_class, message.deadline) == ("otp", NOW + 60)


def test_parse_mime_strips_bcc_and_control_headers_from_raw_mime() -> None:
    raw = parse_mime(SUBMITTED, now=NOW).raw_mime
    assert raw == SUBMITTED.replace(
        b"Bcc: hidden@example.com,\r\n boss@example.com\r\n", b""
    ).replace(b"X-Mailmux-Class: otp\r\nX-Mailmux-Deadline: 60\r\n", b"")


def test_parse_mime_envelope_is_authoritative() -> None:
    envelope = ["ALICE@example.com", "carol@example.com", "carol@example.com"]
    message = parse_mime(SUBMITTED, now=NOW, envelope_to=envelope)
    assert message.to == (Address("alice@example.com"),)  # team@ was not in the envelope
    assert message.bcc == (Address("carol@example.com"),)


def test_parse_mime_reads_and_strips_x_mailmux_tags() -> None:
    raw = (
        b"From: a@example.com\r\nTo: b@example.com\r\n"
        b"X-Mailmux-Tags: orders, , receipts\r\nX-Mailmux-Tags: orders,\r\n eu\r\n"
        b"\r\nhi\r\n"
    )
    message = parse_mime(raw)
    assert message.tags == ("orders", "receipts", "eu")  # in order, once each
    assert message.raw_mime == b"From: a@example.com\r\nTo: b@example.com\r\n\r\nhi\r\n"
    assert "X-Mailmux-Tags" not in message.headers


def test_parse_mime_refuses_header_injection_in_tags() -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nX-Mailmux-Tags: =?utf-8?q?a=0Ab?=\r\n\r\n"
    with pytest.raises(InvalidMessage) as caught:
        parse_mime(raw)
    assert [(e.path, e.code) for e in caught.value.errors] == [
        ("X-Mailmux-Tags[0]", "header_injection")
    ]


def test_parse_mime_keeps_the_submitted_bytes_when_nothing_is_private() -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nX-A: 1\r\n\r\nhi\r\n"
    assert parse_mime(raw).raw_mime is raw


def test_parse_mime_reads_smtputf8_headers() -> None:
    raw = "From: Jöhn <jöhn@bücher.de>\r\nTo: b@example.com\r\nSubject: Grüße\r\n\r\nx\r\n"
    message = parse_mime(raw.encode())
    assert message.sender == Address("jöhn@bücher.de", "Jöhn")
    assert message.subject == "Grüße"


def test_parse_mime_envelope_from_stands_in_for_a_missing_from() -> None:
    raw = b"To: b@example.com\r\n\r\nhi\r\n"
    assert parse_mime(raw, envelope_from="a@example.com").sender == Address("a@example.com")
    assert errors_of(lambda: parse_mime(raw)) == [("from", "required")]


def test_parse_mime_reduces_a_filename_to_its_base_name_or_names_it_itself() -> None:
    mime = EmailMessage()
    mime["From"], mime["To"] = "a@example.com", "b@example.com"
    mime.set_content("hi")
    mime.add_attachment(PDF, "application", "pdf", filename='../../tmp/"x".pdf')
    mime.add_attachment(PNG, "image", "png", filename="../")
    message = parse_mime(mime.as_bytes())
    assert [a.filename for a in message.attachments] == ["x.pdf", "attachment-2.png"]


def test_parse_mime_inline_part_without_content_id_is_an_attachment() -> None:
    mime = EmailMessage()
    mime["From"], mime["To"] = "a@example.com", "b@example.com"
    mime.set_content("hi")
    mime.add_attachment(PNG, "image", "png", disposition="inline")
    message = parse_mime(mime.as_bytes())
    assert message.attachments == (Attachment("attachment-1.png", PNG, "image/png"),)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"From: a@example.com\r\nTo: bob@example\r\n\r\nhi\r\n", [("to[0]", "invalid_address")]),
        (b"From: a@example.com\r\nTo: bob@\r\n\r\nhi\r\n", [("to", "invalid_address")]),
        (
            b"From: a@example.com, b@example.com\r\nTo: c@example.com\r\n\r\nhi\r\n",
            [("from", "invalid_address")],
        ),
        (b"From: a@example.com\r\n\r\nhi\r\n", [("to", "required")]),
        (
            b"From: a@example.com\r\nTo: b@example.com\r\n"
            b"Subject: =?utf-8?q?a=0D=0ABcc:_x?=\r\n\r\n",
            [("subject", "header_injection")],
        ),
        (
            b"From: a@example.com\r\nTo: b@example.com\r\n"
            b"Content-Type: text/plain; charset=bogus\r\n\r\nhi\r\n",
            [("text", "invalid_mime")],
        ),
        (
            b"From: a@example.com\r\nTo: b@example.com\r\nX-Mailmux-Deadline: 1999-01-01T00:00:00Z"
            b"\r\n\r\nhi\r\n",
            [("X-Mailmux-Deadline", "deadline_passed")],
        ),
    ],
)
def test_parse_mime_errors(raw: bytes, expected: list[tuple[str, str]]) -> None:
    assert errors_of(lambda: parse_mime(raw, now=NOW)) == expected


def test_parse_mime_size_limits() -> None:
    raw = render_mime(RICH, now=NOW)
    small = MessageLimits(max_message_bytes=100)
    assert errors_of(lambda: parse_mime(raw, limits=small)) == [("", "too_large")]
    limits = MessageLimits(max_attachment_bytes=len(PDF), max_recipients=1)
    assert errors_of(lambda: parse_mime(raw, limits=limits)) == [
        ("to", "too_many_recipients"),
        ("attachments[0].content", "too_large"),
    ]


def test_remembered_headers_are_bounded_and_exact() -> None:
    from mailmux.mime import _REMEMBERED, _RememberingRegistry

    registry = _RememberingRegistry()
    first = registry("Content-Type", "text/plain")
    assert registry("Content-Type", "text/plain") is first  # parsed once
    lower = registry("content-type", "text/plain")
    assert lower is not first and lower.name == "content-type"  # named as the message does
    long_value = "x" * 1000
    assert registry("Subject", long_value) is not registry("Subject", long_value)  # not kept
    for n in range(_REMEMBERED * 2):
        registry("X-N", str(n))
    assert len(registry._seen) <= _REMEMBERED
