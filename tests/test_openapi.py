"""The request schema of the OpenAPI document against the validator, message by message.

Each body below is judged twice — by the schema (with jsonschema-rs: patterns are
ECMA-262 regular expressions) and by `parse_native` — and both must agree. The
rules JSON Schema cannot state are listed apart, each with the words of the
document that say so.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from mailmux.ingress.openapi import OPENAPI, openapi_document
from mailmux.message import RESERVED_HEADERS, InvalidMessage, MessageLimits
from mailmux.native import parse_native

NOW = 1_900_000_000.0  # 2030-03-17, a fixed "now" for deadlines
BASE: dict[str, Any] = {"from": "app@example.com", "to": ["user@example.net"], "text": "hi"}
PNG = "iVBORw0KGgo="


def validator(document: dict[str, Any], pointer: str) -> Any:
    """A validator for the schema at `pointer`, resolving the document's `$ref`s."""
    return jsonschema_rs.Draft202012Validator({**document, "$ref": pointer})


MESSAGE = validator(OPENAPI, "#/components/schemas/Message")


def accepted(body: Any, **kwargs: Any) -> bool:
    try:
        parse_native(body, now=NOW, **kwargs)
    except InvalidMessage:
        return False
    return True


def attachment(**fields: Any) -> dict[str, Any]:
    return {**BASE, "attachments": [{"filename": "logo.png", "content": PNG, **fields}]}


VALID: dict[str, Any] = {
    "to only": BASE,
    "cc only": {"from": "app@example.com", "cc": "user@example.net", "html": "<p>hi"},
    "bcc only": {"from": "app@example.com", "to": [], "bcc": ["user@example.net"], "text": "x"},
    "to as one string": {**BASE, "to": "user@example.net"},
    "to as one object": {**BASE, "to": {"email": "user@example.net", "name": "User"}},
    "name and address": {**BASE, "from": "Shop <noreply@shop.example>"},
    "quoted name with a comma": {**BASE, "to": ['"Doe, Jane" <jane@example.org>']},
    "name with a '<'": {**BASE, "to": ["a<b <user@example.net>"]},
    "unicode name": {**BASE, "from": "Jöhn Dœ <j@example.com>"},
    "blanks around": {**BASE, "to": ["\u00a0 user@example.net\t"]},
    "blanks inside the brackets": {**BASE, "to": ["User < user@example.net >"]},
    "empty name": {**BASE, "to": ["<user@example.net>"]},
    "object with null name": {**BASE, "from": {"email": "app@example.com", "name": None}},
    "upper-case domain": {**BASE, "to": ["User@Example.NET"]},
    "every atext character": {**BASE, "to": ["a!#$%&'*+/=?^_`{|}~-@example.com"]},
    "nulls for optional fields": {
        **BASE,
        **dict.fromkeys(["cc", "bcc", "reply_to", "subject", "html", "headers"]),
        **dict.fromkeys(["attachments", "tags", "metadata", "class", "deadline"]),
    },
    "html only, text empty": {**BASE, "text": "", "html": "<b>hi</b>"},
    "reply_to list": {**BASE, "reply_to": ["a@example.com", {"email": "b@example.com"}]},
    "subject with unicode": {**BASE, "subject": "Ihr Code: 123 ✓"},
    "custom headers": {**BASE, "headers": {"X-Campaign": "spring", "In-Reply-To": "<a@b>"}},
    "header names of every printable but ':'": {**BASE, "headers": {"!#$%&'*+-.^_`|~9;": "x"}},
    "attachment": attachment(content_type="Image/PNG"),
    "attachment, wrapped base64": attachment(content="iVBO\r\nRw0K\n Ggo="),
    "attachment, empty": attachment(content=""),
    "attachment, null content_type": attachment(content_type=None),
    "inline attachment": attachment(inline=True, content_id="<logo@example>"),
    "inline false without content_id": attachment(inline=False),
    "content_id with one bracket": attachment(content_id="logo@example>"),
    "tags and metadata": {**BASE, "tags": ["welcome", ""], "metadata": {"user": "42", "": ""}},
    "class": {**BASE, "class": "otp"},
    "class of 64": {**BASE, "class": "a" * 64},
    "deadline in seconds": {**BASE, "deadline": 60},
    "deadline, a fraction of a second": {**BASE, "deadline": 0.5},
    "deadline instant": {**BASE, "deadline": "2100-01-31T12:00:00Z"},
    "deadline instant with offset, space, fraction": {
        **BASE,
        "deadline": "2100-01-31 12:00:00.123456789+05:30",
    },
    "deadline instant, lower case": {**BASE, "deadline": "2100-01-31t12:00:00z"},
    "deadline on a leap day": {**BASE, "deadline": "2096-02-29T00:00:00Z"},
    "deadline in 2400, a leap day": {**BASE, "deadline": "2400-02-29T00:00:00-23:59"},
}

INVALID: dict[str, Any] = {
    "not an object": ["to"],
    "no recipient": {**BASE, "to": []},
    "recipients all null": {**BASE, "to": None, "cc": None},
    "no sender": {"to": ["user@example.net"], "text": "x"},
    "null sender": {**BASE, "from": None},
    "two senders": {**BASE, "from": ["a@example.com", "b@example.com"]},
    "no body": {"from": "app@example.com", "to": ["user@example.net"]},
    "empty bodies": {**BASE, "text": "", "html": ""},
    "body not a string": {**BASE, "text": 5},
    "unknown field": {**BASE, "recipients": ["a@example.com"]},
    "empty address": {**BASE, "to": [""]},
    "address object without email": {**BASE, "to": [{"name": "User"}]},
    "address object, null email": {**BASE, "to": [{"email": None}]},
    "address object, unknown field": {**BASE, "to": [{"email": "a@example.com", "x": 1}]},
    "null in a list of addresses": {**BASE, "to": [None]},
    "no dot in the domain": {**BASE, "to": ["user@localhost"]},
    "special-use domain": {**BASE, "to": ["user@example.test"]},
    "special-use domain, any case": {**BASE, "to": ["User <user@shop.LOCAL>"]},
    "special-use domain, blanks in the brackets": {**BASE, "to": ["U < user@home.arpa >"]},
    "top-level domain ends in a digit": {**BASE, "to": ["user@example.c0"]},
    "two dots": {**BASE, "to": ["us..er@example.net"]},
    "hyphen at a label's end": {**BASE, "to": ["user@example-.net"]},
    "IDNA hyphens": {**BASE, "to": ["user@ab--cd.net"]},
    "name with a line break": {**BASE, "to": ["Evil\r\nBcc: x@example.com <a@example.com>"]},
    "object name with NUL": {**BASE, "to": [{"email": "a@example.com", "name": "a\x00"}]},
    "address with a line break": {**BASE, "to": ["user@example.net\n"]},
    "subject with a line break": {**BASE, "subject": "hi\nBcc: x@example.com"},
    "subject with a Unicode line separator": {**BASE, "subject": "hi\u2028there"},
    "subject too long": {**BASE, "subject": "x" * 16385},
    "reserved header": {**BASE, "headers": {"From": "x@example.com"}},
    "reserved header, odd case": {**BASE, "headers": {"mESSAGE-iD": "<x@y>"}},
    "header name with ':'": {**BASE, "headers": {"X:Y": "z"}},
    "header name with a space": {**BASE, "headers": {"X Y": "z"}},
    "empty header name": {**BASE, "headers": {"": "z"}},
    "header value with CR": {**BASE, "headers": {"X-A": "a\rb"}},
    "header value null": {**BASE, "headers": {"X-A": None}},
    "headers not an object": {**BASE, "headers": ["X-A: b"]},
    "attachment without filename": {**BASE, "attachments": [{"content": PNG}]},
    "attachment, empty filename": attachment(filename=""),
    "attachment, filename with a line break": attachment(filename="a\n.png"),
    "attachment, not base64": attachment(content="not base64!"),
    "attachment, bad padding": attachment(content="QQ="),
    "attachment, null content": attachment(content=None),
    "attachment, unknown field": attachment(disposition="inline"),
    "inline attachment without content_id": attachment(inline=True),
    "inline null": attachment(inline=None),
    "multipart content_type": attachment(content_type="multipart/mixed"),
    "content_type with parameters": attachment(content_type="text/plain; charset=utf-8"),
    "content_id empty in brackets": attachment(content_id="<>"),
    "content_id with a space": attachment(content_id="a b@example"),
    "tag null": {**BASE, "tags": [None]},
    "tag with a line break": {**BASE, "tags": ["a\nb"]},
    "tags not a list": {**BASE, "tags": "welcome"},
    "metadata value a number": {**BASE, "metadata": {"user": 42}},
    "metadata key with a line break": {**BASE, "metadata": {"a\rb": "c"}},
    "class upper case": {**BASE, "class": "OTP"},
    "class empty": {**BASE, "class": ""},
    "class of 65": {**BASE, "class": "a" * 65},
    "deadline zero": {**BASE, "deadline": 0},
    "deadline negative": {**BASE, "deadline": -5},
    "deadline a boolean": {**BASE, "deadline": True},
    "deadline not an instant": {**BASE, "deadline": "tomorrow"},
    "deadline without offset": {**BASE, "deadline": "2100-01-31T12:00:00"},
    "deadline, month 13": {**BASE, "deadline": "2100-13-01T00:00:00Z"},
    "deadline, 31 April": {**BASE, "deadline": "2100-04-31T00:00:00Z"},
    "deadline, 29 February 2100": {**BASE, "deadline": "2100-02-29T00:00:00Z"},
    "deadline, second 60": {**BASE, "deadline": "2100-01-01T00:00:60Z"},
    "deadline, hour 24": {**BASE, "deadline": "2100-01-01T24:00:00Z"},
    "deadline, offset 24:00": {**BASE, "deadline": "2100-01-01T00:00:00+24:00"},
    "deadline, fraction without digits": {**BASE, "deadline": "2100-01-01T00:00:00.Z"},
    "deadline, year 0": {**BASE, "deadline": "0000-01-01T00:00:00Z"},
    "deadline, non-ASCII digits": {**BASE, "deadline": "\uff12\uff11\uff10\uff10-01-01T00:00:00Z"},
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_what_the_schema_allows_mailmux_accepts(body: Any) -> None:
    assert MESSAGE.is_valid(body)
    parse_native(body, now=NOW)


@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID.keys())
def test_what_the_schema_refuses_mailmux_refuses(body: Any) -> None:
    assert not MESSAGE.is_valid(body)
    assert not accepted(body)


def test_every_reserved_header_is_refused_in_any_case() -> None:
    for name in sorted(RESERVED_HEADERS):
        for spelling in (name, name.upper(), name.title()):
            body = {**BASE, "headers": {spelling: "x"}}
            assert not MESSAGE.is_valid(body), spelling
            assert not accepted(body), spelling


# What JSON Schema cannot say: the schema allows it, mailmux refuses it, and the document
# says so where the rule belongs (schema pointer, words of its description).
BEYOND_JSON_SCHEMA: dict[str, tuple[Any, str, str]] = {
    "a deadline passed": (
        {**BASE, "deadline": "2001-01-01T00:00:00Z"},
        "#/components/schemas/Message/properties/deadline",
        "must lie in the future",
    ),
    "a deadline too short to tell from now": (
        {**BASE, "deadline": 1e-9},
        "#/components/schemas/Message/properties/deadline",
        "must lie in the future",
    ),
    "one header in two spellings": (
        {**BASE, "headers": {"X-A": "1", "x-a": "2"}},
        "#/components/schemas/Message/properties/headers/anyOf/0/propertyNames",
        "case-insensitive",
    ),
    "a subject of 16384 characters but more bytes": (
        {**BASE, "subject": "é" * 16384},
        "#/components/schemas/Message/properties/subject/anyOf/0",
        "bytes of UTF-8",
    ),
    "recipients over the limit in all": (
        {**BASE, "to": [f"u{n}@example.net" for n in range(600)], "cc": ["c@example.net"] * 401},
        "#/components/schemas/Message",
        "1000 in all",
    ),
    "a message over the size limit": (
        {**BASE, "text": "x" * (25 * 1024 * 1024 + 1)},
        "#/components/schemas/Message",
        f"at most {25 * 1024 * 1024} bytes",
    ),
}


@pytest.mark.parametrize(
    ("body", "pointer", "words"), BEYOND_JSON_SCHEMA.values(), ids=BEYOND_JSON_SCHEMA.keys()
)
def test_rules_json_schema_cannot_state_are_described(body: Any, pointer: str, words: str) -> None:
    assert MESSAGE.is_valid(body)
    assert not accepted(body)
    assert words in _at(pointer)["description"]


# The other way round: mailmux accepts addresses the patterns leave out (they describe the
# plain ASCII addresses); the document says so.
BEYOND_THE_PATTERNS = {
    "internationalized local part": "jöhn@example.com",
    "internationalized domain": "user@bücher.example",
    "a long dotted local part": "a.b.c.d.e@example.com",
}


@pytest.mark.parametrize("address", BEYOND_THE_PATTERNS.values(), ids=BEYOND_THE_PATTERNS.keys())
def test_addresses_beyond_the_patterns_are_described(address: str) -> None:
    body = {**BASE, "to": [address]}
    assert not MESSAGE.is_valid(body)
    assert accepted(body)
    assert "internationalized" in _at("#/components/schemas/Address/anyOf/0")["description"]


def _at(pointer: str) -> Any:
    node: Any = OPENAPI
    for part in pointer.removeprefix("#/").split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


IDEMPOTENCY_KEY = jsonschema_rs.Draft202012Validator(
    OPENAPI["paths"]["/v1/messages"]["post"]["parameters"][0]["schema"]
)


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("k", True),
        ("order-42 retry #1", True),
        ("~" * 256, True),
        ("", False),
        ("~" * 257, False),
        ("tab\there", False),
        ("é", False),
        ("\x7f", False),
    ],
)
def test_the_idempotency_key_schema_is_the_validator(key: str, valid: bool) -> None:
    assert IDEMPOTENCY_KEY.is_valid(key) is valid
    assert accepted(BASE, idempotency_key=key) is valid


def test_the_document_states_the_configured_limits() -> None:
    limits = MessageLimits(
        max_message_bytes=1000, max_attachment_bytes=500, max_recipients=3, max_header_bytes=64
    )
    document = openapi_document(limits, max_request_bytes=2000)
    message = validator(document, "#/components/schemas/Message")
    three = ["a@example.com", "b@example.com", "c@example.com"]

    assert message.is_valid({**BASE, "to": three, "subject": "x" * 64})
    assert not message.is_valid({**BASE, "to": [*three, "d@example.com"]})
    assert not message.is_valid({**BASE, "subject": "x" * 65})
    post = document["paths"]["/v1/messages"]["post"]
    assert "2000 bytes" in post["requestBody"]["description"]
    assert "at most 1000 bytes" in document["components"]["schemas"]["Message"]["description"]


EXAMPLES = OPENAPI["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]


@pytest.mark.parametrize("name", EXAMPLES["examples"])
def test_the_documented_examples_are_messages(name: str) -> None:
    body = EXAMPLES["examples"][name]["value"]
    assert MESSAGE.is_valid(body)
    parse_native(body, now=NOW)


def test_every_esp_shaped_route_is_in_the_document_and_it_stays_valid_openapi() -> None:
    from openapi_spec_validator import validate

    from mailmux.vendors.shapes import SHAPE_NAMES, SHAPES

    shapes = [SHAPES[name] for name in SHAPE_NAMES]
    document = openapi_document(shapes=shapes)

    validate(document)  # type: ignore[arg-type]
    for shape in shapes:
        for endpoint in shape.endpoints:
            operation = document["paths"][endpoint.path][endpoint.method.lower()]
            assert operation["tags"] == ["esp-shaped"]
            (scheme,) = operation["security"][0]
            assert scheme in document["components"]["securitySchemes"]
    assert len(shapes) == 8, "every ESP mailmux sends to has its send API served"
