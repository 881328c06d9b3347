"""The SES v2 shape's pure parts: what a SendEmail body becomes, and how refusals are worded."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from mailmux.message import Address, MessageLimits
from mailmux.vendors.inbound import Failure, ItemResult, ShapeError, ShapeRequest
from mailmux.vendors.ses.inbound import SesInbound

SHAPE = SesInbound()
SIMPLE: dict[str, Any] = {
    "FromEmailAddress": "shop@example.com",
    "Destination": {"ToAddresses": ["ana@example.org"]},
    "Content": {"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "Hello."}}}},
}


def request(body: Any) -> ShapeRequest:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return ShapeRequest(
        "outbound-emails",
        "POST",
        "/v2/email/outbound-emails",
        "",
        {},
        {"Content-Type": "application/x-amz-json-1.1"},
        raw,
    )


def parse(body: Any) -> Any:
    (message,) = SHAPE.parse(request(body), now=0.0, limits=MessageLimits())
    return message


def test_the_original_keeps_the_body_and_its_content_type() -> None:
    raw = orjson.dumps(SIMPLE) + b"\n"
    (message,) = SHAPE.parse(request(raw), now=0.0, limits=MessageLimits())
    original = message.original
    assert original is not None
    assert original.body is raw
    assert original.content_type == "application/x-amz-json-1.1"
    assert (original.shape, original.endpoint, original.exclusive) == ("ses", "outbound-emails", ())


@pytest.mark.parametrize(
    ("extra", "exclusive"),
    [
        ({"ConfigurationSetName": "x", "TenantName": "t"}, ()),
        ({"ConfigurationOverrides": {"Tracking": {"OpenTrackingEnabled": "ENABLED"}}}, ()),
        ({"ListManagementOptions": {"ContactListName": "news"}}, ("ListManagementOptions",)),
        ({"FeedbackForwardingEmailAddress": "b@example.com"}, ("FeedbackForwardingEmailAddress",)),
        ({"SomethingNew": 1}, ("SomethingNew",)),
        ({"ListManagementOptions": None}, ()),
    ],
    ids=["account-side", "tracking", "list-management", "feedback", "unknown", "null"],
)
def test_fields_only_ses_carries_are_exclusive_and_account_fields_dropped(
    extra: dict[str, Any], exclusive: tuple[str, ...]
) -> None:
    assert parse({**SIMPLE, **extra}).original.exclusive == exclusive


def test_a_template_and_unknown_nested_fields_are_exclusive() -> None:
    template = {**SIMPLE, "Content": {"Template": {"TemplateName": "welcome"}}}
    assert parse(template).original.exclusive == ("Content.Template",)
    nested = orjson.loads(orjson.dumps(SIMPLE))
    nested["Content"]["Simple"]["Body"]["Amp"] = {"Data": "x"}
    assert parse(nested).original.exclusive == ("Content.Simple.Body.Amp",)


def test_email_tags_become_metadata_and_encoded_names_are_decoded() -> None:
    body = {
        **SIMPLE,
        "FromEmailAddress": "=?utf-8?q?Zo=C3=AB?= <shop@example.com>",
        "EmailTags": [{"Name": "campaign", "Value": "spring"}, {"Name": "n", "Value": "1"}],
    }
    message = parse(body)
    assert message.sender == Address("shop@example.com", "Zoë")
    assert message.metadata == {"campaign": "spring", "n": "1"}
    assert message.tags == ()


def test_raw_content_uses_destination_as_its_envelope() -> None:
    mime = b"From: a@example.com\r\nTo: b@example.com, c@example.com\r\nSubject: s\r\n\r\nhi\r\n"
    body = {
        "Destination": {"ToAddresses": ["b@example.com", "d@example.com"]},
        "Content": {"Raw": {"Data": base64.b64encode(mime).decode()}},
    }
    message = parse(body)
    assert message.raw_mime == mime
    assert [a.email for a in message.to] == ["b@example.com"]
    assert [a.email for a in message.bcc] == ["d@example.com"]


def test_every_problem_is_reported_at_once() -> None:
    body = {
        "FromEmailAddress": "nope",
        "Destination": {"ToAddresses": ["also nope"]},
        "Content": {"Simple": {"Subject": {"Data": "a\nb"}, "Body": {}}},
        "EmailTags": [{"Name": "a b", "Value": "c"}],
    }
    with pytest.raises(ShapeError) as raised:
        parse(body)
    paths = {e.path for e in raised.value.errors}
    assert {
        "FromEmailAddress",
        "Destination.ToAddresses[0]",
        "Content.Simple.Subject.Data",
    } <= paths
    assert {"Content.Simple.Body", "EmailTags[0]"} <= paths


WORDED = {
    Failure.INVALID_JSON: (400, "BadRequestException"),
    Failure.INVALID_REQUEST: (400, "BadRequestException"),
    Failure.TOO_LARGE: (400, "MessageRejected"),
    Failure.UNAUTHORIZED: (403, "MissingAuthenticationTokenException"),
    Failure.FORBIDDEN: (403, "SignatureDoesNotMatch"),
    Failure.REJECTED: (400, "MessageRejected"),
    Failure.EXPIRED: (400, "MessageRejected"),
    Failure.UNAVAILABLE: (503, "ServiceUnavailable"),
    Failure.IDEMPOTENCY_REUSED: (409, "ConflictException"),
    Failure.IDEMPOTENCY_IN_FLIGHT: (409, "ConflictException"),
}


@pytest.mark.parametrize("failure", list(Failure), ids=lambda f: f.value)
def test_every_failure_is_worded_as_ses_words_it(failure: Failure) -> None:
    reply = SHAPE.failure("outbound-emails", failure, "why")
    body = orjson.loads(reply.body)
    assert (reply.status, reply.headers["x-amzn-ErrorType"]) == WORDED[failure]
    assert body["__type"] == WORDED[failure][1] and body["message"]
    assert reply.headers["Content-Type"] == "application/json"


def test_success_and_queued_carry_mailmux_id_where_ses_puts_its_own() -> None:
    for result in (ItemResult("mm-1", accepted=True), ItemResult("mm-1", True, queued=True)):
        reply = SHAPE.reply(request(b""), [result])
        assert (reply.status, orjson.loads(reply.body)) == (200, {"MessageId": "mm-1"})
    expired = SHAPE.reply(request(b""), [ItemResult("mm-2", False, expired=True)])
    assert (expired.status, expired.headers["x-amzn-ErrorType"]) == (400, "MessageRejected")


@pytest.mark.parametrize(
    "name", ["=?\x80?q?x?=", "=?x-nope?q?x?=", "=?utf-8?b?not base64?=", "=?utf-8?q?=FF?="]
)
def test_a_broken_encoded_word_is_a_name_as_written_not_a_crash(name: str) -> None:
    message = parse({**SIMPLE, "FromEmailAddress": f"{name} <shop@example.com>"})
    assert message.sender.email == "shop@example.com"


def test_an_encoded_line_break_in_a_display_name_is_refused() -> None:
    with pytest.raises(ShapeError) as raised:
        parse({**SIMPLE, "FromEmailAddress": "=?utf-8?q?a=0D=0ABcc:_x@y.z?= <shop@example.com>"})
    assert [e.code for e in raised.value.errors] == ["header_injection"]
