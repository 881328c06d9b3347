"""parse_native: the native JSON API body validated into a Message, every error at once."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from test_message import NOW, PDF, PNG, RICH, errors_of

from mailmux.message import (
    DEFAULT_LIMITS,
    Address,
    Attachment,
    InvalidMessage,
    MessageLimits,
    recipient_count,
)
from mailmux.native import parse_native


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def minimal(**fields: Any) -> dict[str, Any]:
    return {"from": "app@example.com", "to": ["user@example.com"], "text": "hi\n", **fields}


def rich() -> dict[str, Any]:
    return {
        "from": "Jöhn Dœ <john@bücher.de>",
        "to": ["alice@example.com", {"email": "bob@EXAMPLE.com", "name": "Bob, B."}],
        "cc": '"Doe, \\"Carol\\"" <carol@example.org>',
        "bcc": ["secret@example.net"],
        "reply_to": "Replies <replies@example.com>",
        "subject": "Hello wörld",
        "text": "Hi there\n",
        "html": '<p>Hi <img src="cid:logo@x"></p>\n',
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
        "attachments": [
            {"filename": "logo.png", "content": b64(PNG), "inline": True, "content_id": "<logo@x>"},
            {"filename": "Bericht Grüße.pdf", "content": b64(PDF)},
        ],
        "tags": ["welcome", "spring"],
        "metadata": {"user_id": "42"},
        "class": "otp",
        "deadline": "2030-01-01T01:05:00+01:00",
    }


def native_errors(payload: object, limits: MessageLimits = DEFAULT_LIMITS) -> list[tuple[str, str]]:
    return errors_of(lambda: parse_native(payload, now=NOW, limits=limits))


# --- parse_native: the happy paths ----------------------------------------------------


def test_rich_message_parses_to_the_expected_message() -> None:
    assert parse_native(rich(), now=NOW, idempotency_key="order-1234") == RICH


def test_relative_deadline_is_seconds_after_now() -> None:
    assert parse_native(minimal(deadline=30), now=NOW).deadline == NOW + 30
    assert parse_native(minimal(deadline=2.5), now=NOW).deadline == NOW + 2.5


def test_defaults_for_a_minimal_message() -> None:
    message = parse_native(
        {"from": "a@example.com", "bcc": "b@example.com", "html": "<b>x</b>"}, now=NOW
    )
    assert message.to == () and message.bcc == (Address("b@example.com"),)
    assert (message.text, message.subject, message.traffic_class) == (None, "", "transactional")
    assert message.deadline is None and message.headers == {} and message.attachments == ()


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", "application/pdf"),
        ("photo.JPG", "image/jpeg"),
        ("archive.tar.gz", "application/octet-stream"),  # the type of a compressed file is unknown
        ("README", "application/octet-stream"),
    ],
)
def test_attachment_content_type_is_guessed_from_the_filename(filename: str, expected: str) -> None:
    payload = minimal(attachments=[{"filename": filename, "content": b64(b"x")}])
    assert parse_native(payload, now=NOW).attachments[0].content_type == expected


@pytest.mark.parametrize(
    ("given", "sent_as"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ada\\invoice.pdf", "invoice.pdf"),
        ('report".pdf', "report.pdf"),
        ("it's\tmine.txt", "itsmine.txt"),
        ("plain name.pdf", "plain name.pdf"),
    ],
)
def test_an_attachment_filename_is_reduced_to_a_safe_base_name(given: str, sent_as: str) -> None:
    payload = minimal(attachments=[{"filename": given, "content": b64(b"x")}])
    assert parse_native(payload, now=NOW).attachments[0].filename == sent_as


@pytest.mark.parametrize("given", ["../", "..", '""', "dir/\\"])
def test_a_filename_with_no_base_name_is_refused(given: str) -> None:
    payload = minimal(attachments=[{"filename": given, "content": b64(b"x")}])
    assert native_errors(payload) == [("attachments[0].filename", "invalid_filename")]


def test_explicit_content_type_is_lower_cased() -> None:
    payload = minimal(attachments=[{"filename": "a", "content": "", "content_type": "Text/CSV"}])
    assert parse_native(payload, now=NOW).attachments[0] == Attachment("a", b"", "text/csv")


def test_line_wrapped_base64_is_accepted() -> None:
    wrapped = "\r\n".join(b64(PNG)[i : i + 76] for i in range(0, len(b64(PNG)), 76))
    payload = minimal(attachments=[{"filename": "a.png", "content": wrapped}])
    assert parse_native(payload, now=NOW).attachments[0].content == PNG


def test_message_does_not_share_the_callers_dicts() -> None:
    payload = minimal(headers={"X-A": "1"}, metadata={"k": "v"})
    message = parse_native(payload, now=NOW)
    payload["headers"]["X-B"] = "2"
    payload["metadata"]["k"] = "changed"
    assert message.headers == {"X-A": "1"} and message.metadata == {"k": "v"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.subject = "x"  # type: ignore[misc]


# --- parse_native: every error, with its path -------------------------------------------


@pytest.mark.parametrize(
    ("change", "path", "code"),
    [
        ({"from": None}, "from", "required"),
        ({"from": ["a@example.com"]}, "from", "invalid_type"),
        ({"to": []}, "to", "required"),
        ({"to": ["ok@example.com", "bob@"]}, "to[1]", "invalid_address"),
        ({"to": "Bob <bob@localhost>"}, "to", "invalid_address"),
        ({"cc": [{"name": "No Address"}]}, "cc[0].email", "required"),
        ({"cc": [{"email": 5}]}, "cc[0].email", "invalid_type"),
        ({"to": [{"email": "a@example.com", "nick": "a"}]}, "to[0].nick", "unknown_field"),
        ({"to": 5}, "to", "invalid_type"),
        ({"reply_to": [7]}, "reply_to[0]", "invalid_type"),
        ({"subject": 5}, "subject", "invalid_type"),
        ({"text": None}, "text", "required"),
        ({"text": ["hi"]}, "text", "invalid_type"),
        ({"subjct": "hi"}, "subjct", "unknown_field"),
        ({"headers": ["X-A: b"]}, "headers", "invalid_type"),
        ({"headers": {"X Foo": "b"}}, "headers.X Foo", "invalid_header_name"),
        ({"headers": {"Bcc": "spy@example.com"}}, "headers.Bcc", "reserved_header"),
        ({"headers": {"message-id": "<x@y>"}}, "headers.message-id", "reserved_header"),
        ({"headers": {"X-Mailmux-Class": "otp"}}, "headers.X-Mailmux-Class", "reserved_header"),
        ({"headers": {"X-A": "1", "x-a": "2"}}, "headers.x-a", "duplicate_header"),
        ({"headers": {"X-A": 1}}, "headers.X-A", "invalid_type"),
        ({"headers": {"X-A": "a" * 20000}}, "headers.X-A", "too_large"),
        ({"attachments": {"filename": "a"}}, "attachments", "invalid_type"),
        ({"attachments": [{"content": "eA=="}]}, "attachments[0].filename", "required"),
        ({"attachments": [{"filename": "a"}]}, "attachments[0].content", "required"),
        (
            {"attachments": [{"filename": "a", "content": 1}]},
            "attachments[0].content",
            "invalid_type",
        ),
        (
            {"attachments": [{"filename": "a", "content": "!!!"}]},
            "attachments[0].content",
            "invalid_base64",
        ),
        (
            {"attachments": [{"filename": "a", "content": "", "contnet": ""}]},
            "attachments[0].contnet",
            "unknown_field",
        ),
        (
            {"attachments": [{"filename": "a", "content": "", "inline": True}]},
            "attachments[0].content_id",
            "required",
        ),
        (
            {"attachments": [{"filename": "a", "content": "", "inline": "yes", "content_id": "c"}]},
            "attachments[0].inline",
            "invalid_type",
        ),
        (
            {"attachments": [{"filename": "a", "content": "", "content_id": "a b"}]},
            "attachments[0].content_id",
            "invalid_content_id",
        ),
        (
            {"attachments": [{"filename": "a", "content": "", "content_type": "image"}]},
            "attachments[0].content_type",
            "invalid_content_type",
        ),
        (
            {"attachments": [{"filename": "a", "content": "", "content_type": "multipart/mixed"}]},
            "attachments[0].content_type",
            "invalid_content_type",
        ),
        ({"tags": "welcome"}, "tags", "invalid_type"),
        ({"tags": ["ok", None]}, "tags[1]", "invalid_type"),
        ({"metadata": {"count": 3}}, "metadata.count", "invalid_type"),
        ({"metadata": {"flag": None}}, "metadata.flag", "invalid_type"),
        ({"class": "OTP"}, "class", "invalid_class"),
        ({"class": 1}, "class", "invalid_type"),
        ({"deadline": -1}, "deadline", "deadline_passed"),
        ({"deadline": 0}, "deadline", "deadline_passed"),
        ({"deadline": "2029-12-31T23:59:59Z"}, "deadline", "deadline_passed"),
        ({"deadline": "tomorrow"}, "deadline", "invalid_deadline"),
        ({"deadline": "2030-06-01T00:00:00"}, "deadline", "invalid_deadline"),  # no offset
        ({"deadline": "2030-13-01T00:00:00Z"}, "deadline", "invalid_deadline"),
        ({"deadline": float("inf")}, "deadline", "invalid_deadline"),
        ({"deadline": True}, "deadline", "invalid_type"),
    ],
)
def test_each_error_has_its_code_and_path(change: dict[str, Any], path: str, code: str) -> None:
    assert native_errors(minimal(**change)) == [(path, code)]


def test_attachment_problems_are_all_reported() -> None:
    payload = minimal(attachments=[{"filename": "", "content": "eA==", "x": 1}])
    assert native_errors(payload) == [
        ("attachments[0].x", "unknown_field"),
        ("attachments[0].filename", "required"),
    ]


def test_body_must_be_an_object() -> None:
    assert native_errors(["not", "an", "object"]) == [("", "invalid_type")]


@pytest.mark.parametrize("key", ["", "k" * 257, "clé", "tab\there"])
def test_invalid_idempotency_key(key: str) -> None:
    call = lambda: parse_native(minimal(), now=NOW, idempotency_key=key)  # noqa: E731
    assert errors_of(call) == [("idempotency_key", "invalid_idempotency_key")]
    assert parse_native(minimal(), now=NOW, idempotency_key="k" * 256).idempotency_key


def test_error_messages_are_readable_and_suggest_the_field_meant() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_native(minimal(to=["ok@example.com", "bob@"], subjct="x"), now=NOW)
    lines = str(caught.value).splitlines()
    assert lines[0] == "subjct: unknown field 'subjct' (did you mean 'subject'?)"
    assert lines[1].startswith("to[1]: 'bob@' is not a valid email address: ")


def test_every_error_is_reported_at_once() -> None:
    payload = {
        "to": ["bob@"],
        "subject": "a\r\nb",
        "deadline": -5,
        "class": "Bulk!",
        "attachments": [{"filename": "x", "content": "%%%"}],
        "colour": "red",
    }
    assert native_errors(payload) == [
        ("colour", "unknown_field"),
        ("from", "required"),
        ("to[0]", "invalid_address"),
        ("subject", "header_injection"),
        ("text", "required"),
        ("attachments[0].content", "invalid_base64"),
        ("class", "invalid_class"),
        ("deadline", "deadline_passed"),
    ]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.com"}, "subject"),
        ({"subject": "Hi\nthere"}, "subject"),
        ({"subject": "Hi\u2028there"}, "subject"),  # a line break to str.splitlines, hence to email
        ({"subject": "Hi\x00"}, "subject"),
        ({"headers": {"X-A": "v\r\nBcc: victim@example.com"}}, "headers.X-A"),
        ({"headers": {"X-A\r\nBcc": "victim@example.com"}}, "headers.'X-A\\r\\nBcc'"),
        ({"from": '"Eve\r\nBcc: victim@example.com" <eve@example.com>'}, "from"),
        ({"to": [{"email": "a@example.com", "name": "Eve\r\nBcc: v@example.com"}]}, "to[0]"),
        ({"to": ["a@example.com\r\nBcc: v@example.com"]}, "to[0]"),
        ({"attachments": [{"filename": "a\r\n.exe", "content": ""}]}, "attachments[0].filename"),
        (
            {
                "attachments": [
                    {"filename": "a", "content": "", "inline": True, "content_id": "c\r\nX: y"}
                ]
            },
            "attachments[0].content_id",
        ),
        ({"tags": ["ok", "bad\r\n"]}, "tags[1]"),
        ({"metadata": {"k": "v\nX-Spoof: 1"}}, "metadata.k"),
    ],
)
def test_line_breaks_in_anything_bound_for_a_header_are_injection(
    change: dict[str, Any], path: str
) -> None:
    assert native_errors(minimal(**change)) == [(path, "header_injection")]


def test_oversize_attachment() -> None:
    limits = MessageLimits(max_attachment_bytes=100)
    payload = minimal(
        attachments=[
            {"filename": "a", "content": b64(bytes(100))},
            {"filename": "b", "content": b64(bytes(101))},
        ]
    )
    assert native_errors(payload, limits) == [("attachments[1].content", "too_large")]


def test_oversize_message() -> None:
    limits = MessageLimits(max_message_bytes=1000)
    assert parse_native(minimal(text="x" * 800), now=NOW, limits=limits).text == "x" * 800
    payload = minimal(text="x" * 500, attachments=[{"filename": "a", "content": b64(bytes(500))}])
    assert native_errors(payload, limits) == [("", "too_large")]


def test_recipient_limit_counts_to_cc_and_bcc() -> None:
    limits = MessageLimits(max_recipients=3)
    fits = minimal(to=["a@example.com"], cc=["b@example.com"], bcc=["c@example.com"])
    assert recipient_count(parse_native(fits, now=NOW, limits=limits)) == 3
    over = {**fits, "bcc": ["c@example.com", "d@example.com"]}
    assert native_errors(over, limits) == [("to", "too_many_recipients")]
