"""The OpenAPI 3.1 description of the native API, served at /v1/openapi.json.

The request schema follows `mailmux.native` (and the `Checker` rules it shares
with the other ingresses) as closely as JSON Schema can. A schema-valid request
is one mailmux accepts and a schema-invalid one is refused with 400, except for
the rules JSON Schema cannot state; each of those is named in the `description`
of the schema it belongs to:

- a deadline must lie in the future (JSON Schema has no clock);
- header names are case-insensitive, so `X-A` and `x-a` together are a duplicate;
- sizes are bytes of UTF-8 (JSON Schema counts characters), and the total size
  of a message and its recipients over to, cc and bcc are bounded as a whole;
- addresses are checked by email-validator: the patterns here describe the
  plain ASCII addresses everyone sends, while mailmux also takes
  internationalized ones and longer local parts and domains.

Patterns are ECMA-262 regular expressions, anchored with ^…$, and spell their
character classes out (`[0-9]`, the line breaks) so that every engine reads them
the same way. The document is built from the configured limits, so the size and
recipient bounds it states are the ones the server enforces.
"""

from __future__ import annotations

from collections.abc import Sequence

from email_validator import SPECIAL_USE_DOMAIN_NAMES

from mailmux.ingress.openapi_common import (
    EPOCH,
    NULLABLE_NUMBER,
    NULLABLE_STRING,
    Schema,
    answer,
    closed,
    error,
    error_body,
    health,
    ref,
)
from mailmux.ingress.openapi_shapes import shape_paths, shape_security_schemes
from mailmux.message import DEFAULT_LIMITS, RESERVED_HEADERS, MessageLimits
from mailmux.spool.base import EventKind, MessageState
from mailmux.vendors.base import Outcome
from mailmux.vendors.inbound import Shape

#: Characters that end a header line (what `addresses.has_line_break` refuses), NUL included.
_LINE_BREAKS = r"\u0000\n\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029"
#: Blanks Python's str.strip() drops that are not line breaks.
_BLANKS = r"\t \u001f\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
#: Blanks str.split() drops inside line-wrapped base64: the blanks and the line breaks but NUL.
_WRAP = (
    r"\t\n\r\u000b\u000c\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)

_NO_LINE_BREAK = f"^[^{_LINE_BREAKS}]*$"

# An email address as email-validator accepts it, in its plain ASCII form: a dot-atom
# local part, two to four labels with no hyphen at either end or twice in a row (so
# never "ab--", which IDNA reserves), and a top-level domain of letters. Bounded so
# that the whole stays within 254 characters.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL = f"{_ATEXT}{{1,20}}(\\.{_ATEXT}{{1,20}}){{0,2}}"
_LABEL = r"[A-Za-z0-9]{1,20}(-[A-Za-z0-9]{1,19})?"
_DOMAIN = f"({_LABEL}\\.){{1,3}}[A-Za-z]{{1,20}}"
_EMAIL = f"{_LOCAL}@{_DOMAIN}"
_EMAIL_RULES = (
    "email-validator decides; not at a special-use domain such as .test or .local. The "
    "pattern gives its plain ASCII form: internationalized addresses, and longer local "
    "parts and domains, are accepted too."
)


def _any_case(word: str) -> str:
    """`word` as a case-insensitive ECMA pattern fragment (`[Ff][Rr]…`)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _escape(c) for c in word)


def _escape(c: str) -> str:
    return "\\" + c if c in r"\^$.|?*+()[]{}" else c


#: An address at a domain email-validator refuses as special-use (RFC 6761 and friends) —
#: the name itself or under it, in any case — possibly followed by the end of a mailbox.
_NOT_SPECIAL_USE: Schema = {
    "not": {
        "pattern": f"[@.]({'|'.join(map(_any_case, SPECIAL_USE_DOMAIN_NAMES))})"
        f"[{_BLANKS}]*>?[{_BLANKS}]*$"
    }
}


def _nullable(schema: Schema) -> Schema:
    """`schema` or null: the validator reads a null field as an absent one."""
    return {"anyOf": [schema, {"type": "null"}]}


def _header_text(limits: MessageLimits, what: str) -> Schema:
    """A string that ends up in a header (or may: vendors put tags and metadata there)."""
    return {
        "type": "string",
        "pattern": _NO_LINE_BREAK,
        "maxLength": limits.max_header_bytes,
        "description": f"{what}: no line break or NUL (header injection); at most "
        f"{limits.max_header_bytes} bytes of UTF-8",
    }


def _email() -> Schema:
    return {
        "type": "string",
        "pattern": f"^{_EMAIL}$",
        "maxLength": 254,
        "allOf": [_NOT_SPECIAL_USE],
        "description": f"an email address. {_EMAIL_RULES}",
        "examples": ["ada@example.com"],
    }


def _mailbox() -> Schema:
    # split_mailbox: blanks around are dropped; "Name <addr>" when it ends with '>';
    # the name may be double-quoted, with backslash escapes.
    blanks = f"[{_BLANKS}]*"
    name_addr = f"[^{_LINE_BREAKS}]*<{blanks}{_EMAIL}{blanks}>"
    return {
        "type": "string",
        "pattern": f"^{blanks}({_EMAIL}|{name_addr}){blanks}$",
        "allOf": [_NOT_SPECIAL_USE],
        "description": "'addr@example.com' or 'Display Name <addr@example.com>' (the name "
        "may be double-quoted: '\"Doe, Jane\" <jane@example.com>'); no line break or NUL. "
        f"The address: {_EMAIL_RULES}",
        "examples": ["Shop <noreply@shop.example>"],
    }


def _address_object() -> Schema:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["email"],
        "properties": {
            "email": _email(),
            "name": _nullable(
                {
                    "type": "string",
                    "pattern": _NO_LINE_BREAK,
                    "description": "display name: no line break or NUL; blank means none",
                }
            ),
        },
    }


def _recipients(limits: MessageLimits, *, non_empty: bool = False) -> Schema:
    many: Schema = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Address"},
        "maxItems": limits.max_recipients,
    }
    if non_empty:
        many["minItems"] = 1
    return {"anyOf": [{"$ref": "#/components/schemas/Address"}, many]}


def _deadline() -> Schema:
    year = "(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
    leap_year = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
    month_day = (
        "((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
        "|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
        "|02-(0[1-9]|1[0-9]|2[0-8]))"
    )
    time = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?"
    offset = "([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
    instant = f"^({year}-{month_day}|{leap_year}-02-29)[Tt ]{time}{offset}$"
    return {
        "description": "when the message must be delivered by: an RFC 3339 instant, or "
        "seconds after acceptance. It must lie in the future (JSON Schema cannot say so): "
        "a deadline already passed is refused with 400 deadline_passed, and one that "
        "passes before any vendor takes the message answers 504 expired.",
        "anyOf": [
            {
                "type": "string",
                "pattern": instant,
                "description": "RFC 3339: 2030-01-31T12:00:00Z (a space may stand for T; "
                "seconds 00-59; an offset within ±23:59)",
            },
            {"type": "number", "exclusiveMinimum": 0, "description": "seconds from now"},
            {"type": "null"},
        ],
    }


def _header_names() -> Schema:
    reserved = sorted(RESERVED_HEADERS)
    return {
        "pattern": "^[!-9;-~]+$",
        "not": {"pattern": f"^({'|'.join(_any_case(name) for name in reserved)})$"},
        "description": "printable ASCII but ':'; not one mailmux writes from the message "
        f"({', '.join(reserved)}, in any case); names are case-insensitive, so each "
        "may appear once in any spelling",
    }


#: What `safe_filename` drops: quotes and control characters anywhere...
_FILENAME_UNSAFE = r"\"'\u0000-\u001f\u007f"
#: ... and, at either end, what Python's str.strip() takes for white space.
_FILENAME_JUNK = (
    _FILENAME_UNSAFE + r" \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _filename(limits: MessageLimits) -> Schema:
    """An attachment's name: sent as its base name (message.safe_filename), which must not
    come out empty, "." or ".."."""
    return {
        **_header_text(limits, "file name"),
        "minLength": 1,
        "allOf": [
            # somewhere, a character that is kept, with no separator after it
            {"pattern": f"[^/\\\\{_FILENAME_JUNK}][^/\\\\]*$"},
        ],
        "description": "file name: sent as its base name (what follows the last / or \\), "
        "without quotes or control characters; refused when nothing is left, or only . or ..",
    }


def _attachment(limits: MessageLimits) -> Schema:
    group = f"([A-Za-z0-9+/][{_WRAP}]*)"
    base64 = f"^[{_WRAP}]*({group}{{4}})*({group}{{2}}=[{_WRAP}]*=|{group}{{3}}=)?[{_WRAP}]*$"
    token = "[A-Za-z0-9!#$&^_.+-]+"
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["filename", "content"],
        "properties": {
            "filename": _filename(limits),
            "content": {
                "type": "string",
                "contentEncoding": "base64",
                "pattern": base64,
                "description": "base64, optionally line-wrapped; at most "
                f"{limits.max_attachment_bytes} bytes decoded",
            },
            "content_type": _nullable(
                {
                    "type": "string",
                    "pattern": f"^{token}/{token}$",
                    "not": {"pattern": f"^{_any_case('multipart')}/"},
                    "description": "a MIME type without parameters, like image/png (not "
                    "multipart); guessed from the file name when absent",
                }
            ),
            "inline": {
                "type": "boolean",
                "description": "shown in the HTML body (which refers to it as cid:…); "
                "needs content_id",
            },
            "content_id": _nullable(
                {
                    "type": "string",
                    "pattern": f"^[{_BLANKS}]*<?[!-;=?-~]+>?[{_BLANKS}]*$",
                    "maxLength": limits.max_header_bytes,
                    "description": "printable ASCII like logo@example, optionally in <>",
                }
            ),
        },
        "if": {"required": ["inline"], "properties": {"inline": {"const": True}}},
        "then": {"required": ["content_id"], "properties": {"content_id": {"type": "string"}}},
    }


def _message(limits: MessageLimits) -> Schema:
    def given(field: str, schema: Schema) -> Schema:
        return {"required": [field], "properties": {field: schema}}

    non_empty_recipients = _recipients(limits, non_empty=True)
    return {
        "type": "object",
        "description": "A message. At least one recipient over to, cc and bcc (at most "
        f"{limits.max_recipients} in all) and a non-empty text or html body. The message — "
        "bodies, decoded attachments, headers and shown addresses — may have at most "
        f"{limits.max_message_bytes} bytes.",
        "additionalProperties": False,
        "required": ["from"],
        "properties": {
            "from": {"$ref": "#/components/schemas/Address"},
            "to": _nullable(_recipients(limits)),
            "cc": _nullable(_recipients(limits)),
            "bcc": _nullable(_recipients(limits)),
            "reply_to": _nullable(
                {
                    "anyOf": [
                        {"$ref": "#/components/schemas/Address"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/Address"}},
                    ]
                }
            ),
            "subject": _nullable(_header_text(limits, "the subject")),
            "text": _nullable({"type": "string", "description": "the plain-text body"}),
            "html": _nullable({"type": "string", "description": "the HTML body"}),
            "headers": _nullable(
                {
                    "type": "object",
                    "description": "custom headers, name → value",
                    "propertyNames": _header_names(),
                    "additionalProperties": _header_text(limits, "a header value"),
                }
            ),
            "attachments": _nullable(
                {"type": "array", "items": {"$ref": "#/components/schemas/Attachment"}}
            ),
            "tags": _nullable({"type": "array", "items": _header_text(limits, "a tag")}),
            "metadata": _nullable(
                {
                    "type": "object",
                    "description": "key → value, carried to the vendor",
                    "propertyNames": _header_text(limits, "a metadata key"),
                    "additionalProperties": _header_text(limits, "a metadata value"),
                }
            ),
            "class": _nullable(
                {
                    "type": "string",
                    "pattern": "^[a-z0-9_-]{1,64}$",
                    "description": "traffic class (otp, transactional, bulk or your own); "
                    "transactional when absent",
                }
            ),
            "deadline": _deadline(),
        },
        "allOf": [
            {"anyOf": [given(f, non_empty_recipients) for f in ("to", "cc", "bcc")]},
            {"anyOf": [given(f, {"type": "string", "minLength": 1}) for f in ("text", "html")]},
        ],
    }


# --- answers ----------------------------------------------------------------------------


def _receipt(state: str) -> Schema:
    """The receipt POST /v1/messages answers with in `state`: only a sent one names a vendor."""
    sent = state == "sent"
    properties: Schema = {
        "id": {"type": "string", "description": "mailmux's id: GET /v1/messages/{id}"},
        "state": {"const": state},
        "vendor": (
            {"type": "string", "description": "the vendor that accepted it"}
            if sent
            else {"type": "null", "description": "named once a vendor accepted it"}
        ),
        "vendor_message_id": (
            {**NULLABLE_STRING, "description": "the vendor's own id, when it gives one"}
            if sent
            else {"type": "null"}
        ),
    }
    required = ["id", "state", "vendor", "vendor_message_id"]
    if state in ("failed", "expired"):
        properties["reason"] = {"type": "string", "description": f"why it {state}"}
        required.append("reason")
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def _refused_receipt(state: str, code: str) -> Schema:
    """A receipt that is an error body too: 422 failed, 504 expired."""
    receipt = _receipt(state)
    return {
        **receipt,
        "required": [*receipt["required"], "error"],
        "properties": {**receipt["properties"], "error": error([code])},
    }


def _event() -> Schema:
    return {
        "type": "object",
        "required": ["at", "kind", "vendor"],
        "description": "one step; attempts add outcome, latency_ms and, when known, status, "
        "reason, retry_after and vendor_message_id; other kinds add what they record",
        "properties": {
            "at": EPOCH,
            "kind": {"enum": [kind.value for kind in EventKind]},
            "vendor": NULLABLE_STRING,
            "outcome": {"enum": [outcome.value for outcome in Outcome]},
            "latency_ms": {"type": "number"},
            "status": {"type": "integer", "description": "the vendor's answer, when it gave one"},
            "reason": NULLABLE_STRING,
            "retry_after": {"type": "number"},
            "vendor_message_id": NULLABLE_STRING,
            "next_attempt_at": EPOCH,
            "class": {"type": "string"},
        },
    }


def _message_state() -> Schema:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "state",
            "vendor",
            "vendor_message_id",
            "class",
            "created_at",
            "updated_at",
            "deadline",
            "next_attempt_at",
            "attempts",
            "events",
        ],
        "properties": {
            "id": {"type": "string"},
            "state": {"enum": [state.value for state in MessageState]},
            "vendor": {
                **NULLABLE_STRING,
                "description": "the vendor that accepted it; null unless sent",
            },
            "vendor_message_id": NULLABLE_STRING,
            "reason": {"type": "string", "description": "why it failed or expired"},
            "class": {"type": "string"},
            "created_at": EPOCH,
            "updated_at": EPOCH,
            "deadline": {**NULLABLE_NUMBER, "description": "epoch seconds"},
            "next_attempt_at": {**NULLABLE_NUMBER, "description": "epoch seconds; queued only"},
            "attempts": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        },
    }


def _sandbox_entry() -> Schema:
    emails = {"type": "array", "items": {"type": "string"}}
    return closed(
        {
            "vendor_message_id": {"type": "string"},
            "accepted_at": EPOCH,
            "from": {"type": "string"},
            "to": emails,
            "cc": emails,
            "bcc": emails,
            "subject": {"type": "string"},
            "class": {"type": "string"},
        }
    )


_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "present when the Idempotency-Key was seen before: this is the first "
        "request's receipt and nothing was sent again",
        "schema": {"const": "true"},
    }
}


def _receipt_answer(schema: Schema, description: str) -> Schema:
    """A POST /v1/messages answer with a receipt, which GET /v1/messages/{id} follows up."""
    receipt = answer(schema, description, _REPLAYED)
    receipt["links"] = {
        "GetMessage": {
            "operationId": "getMessage",
            "parameters": {"id": "$response.body#/id"},
            "description": "the message's state, attempts and events",
        }
    }
    return receipt


#: Request bodies shown in the document (and sent by tests that send its examples).
_EXAMPLES: Schema = {
    "text": {
        "summary": "a one-time code",
        "value": {
            "from": "Shop <noreply@shop.example>",
            "to": ["ada@example.com"],
            "subject": "Your code",
            "text": "123456",
            "class": "otp",
            "deadline": 60,
        },
    },
    "bcc": {
        "summary": "bcc only, with an inline image",
        "value": {
            "from": {"email": "news@shop.example", "name": "Shop news"},
            "bcc": ["ada@example.com", "Grace <grace@example.org>"],
            "subject": "Spring sale",
            "html": '<img src="cid:logo@shop.example"> Everything half price',
            "attachments": [
                {
                    "filename": "logo.png",
                    "content": "iVBORw0KGgo=",
                    "inline": True,
                    "content_id": "logo@shop.example",
                }
            ],
            "tags": ["spring-sale"],
            "metadata": {"campaign": "2030-spring"},
            "deadline": "2100-01-01T00:00:00Z",
        },
    },
}


_UNAUTHORIZED = {
    "$ref": "#/components/responses/Unauthorized",
}
_NOT_FOUND = answer(error_body("not_found"), "nothing by that name")


def openapi_document(
    limits: MessageLimits = DEFAULT_LIMITS,
    max_request_bytes: int = 36_000_000,
    shapes: Sequence[Shape] = (),
) -> Schema:
    """The document for a server with these limits and these ESP-shaped APIs on."""
    document = _native_document(limits, max_request_bytes)
    document["components"]["securitySchemes"].update(shape_security_schemes(shapes))
    document["paths"].update(shape_paths(shapes))
    return document


def _native_document(limits: MessageLimits, max_request_bytes: int) -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailmux native API",
            "version": "1",
            "description": 'Errors are JSON: {"error": {"code", "message", "details"?}}. '
            "With api_keys or clients configured every route but this document needs "
            "'Authorization: Bearer <key>'. The routes tagged esp-shaped are ESPs' own send "
            "APIs, answered in each ESP's words, with the key in that ESP's auth slot.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Address": {
                    "anyOf": [_mailbox(), _address_object()],
                    "description": "a mailbox: a string or an {email, name} object",
                },
                "Attachment": _attachment(limits),
                "Message": _message(limits),
                "Sent": _receipt("sent"),
                "Queued": _receipt("queued"),
                "MessageState": _message_state(),
                "Event": _event(),
                "Health": health(),
                "SandboxEntry": _sandbox_entry(),
            },
            "responses": {
                "Unauthorized": answer(
                    error_body("unauthorized"),
                    "missing or unknown API key",
                    {
                        "WWW-Authenticate": {
                            "required": True,
                            "schema": {"const": "Bearer"},
                        }
                    },
                ),
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/messages": {
                "post": {
                    "operationId": "sendMessage",
                    "summary": "Send a message: answers once a vendor accepted it or it was "
                    "spooled",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": "the same key with the same body within the "
                            "retention sends nothing and answers as the first request was "
                            "answered (status and body); with another body it is refused "
                            "(422 idempotency_key_reused)",
                            "schema": {
                                "type": "string",
                                # 1 to 256 printable ASCII characters; blanks at either end
                                # are not part of an HTTP header value.
                                "pattern": "^[!-~]([ -~]{0,254}[!-~])?$",
                            },
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "description": f"at most {max_request_bytes} bytes (else 413)",
                        "content": {
                            "application/json": {"schema": ref("Message"), "examples": _EXAMPLES}
                        },
                    },
                    "responses": {
                        "200": _receipt_answer(ref("Sent"), "sent: a vendor accepted it"),
                        "202": _receipt_answer(
                            ref("Queued"), "queued: durably spooled, to be retried"
                        ),
                        "400": answer(
                            error_body(
                                "invalid_json", "invalid_message", "invalid_idempotency_key"
                            ),
                            "not a valid message: details lists every problem",
                        ),
                        "401": _UNAUTHORIZED,
                        "409": answer(
                            error_body("idempotency_conflict"),
                            "another request with this Idempotency-Key is in progress",
                        ),
                        "413": answer(
                            error_body("request_too_large"),
                            f"the request body is over {max_request_bytes} bytes",
                        ),
                        "422": _receipt_answer(
                            {
                                "oneOf": [
                                    _refused_receipt("failed", "rejected"),
                                    error_body("idempotency_key_reused"),
                                ]
                            },
                            "failed: a vendor rejected it permanently, or no vendor can carry "
                            "it; reason says why. Or, with no receipt: the Idempotency-Key was "
                            "first used with another body (idempotency_key_reused), and nothing "
                            "was sent",
                        ),
                        "503": answer(
                            error_body("unavailable"),
                            "not accepted: no vendor took it and it could not be spooled",
                        ),
                        "504": _receipt_answer(
                            _refused_receipt("expired", "deadline_expired"),
                            "expired: the deadline passed before any vendor took it",
                        ),
                    },
                }
            },
            "/v1/messages/{id}": {
                "get": {
                    "operationId": "getMessage",
                    "summary": "A message's state, attempts and events",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "description": "the id of a receipt",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": answer(ref("MessageState"), "the message"),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                }
            },
            "/v1/health": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Vendors with weight, health state, success rate and latency; "
                    "spool counts",
                    "responses": {
                        "200": answer(ref("Health"), "the status report"),
                        "401": _UNAUTHORIZED,
                    },
                }
            },
            "/v1/sandbox/{vendor}/messages": {
                "get": {
                    "operationId": "getSandboxMessages",
                    "summary": "What a sandbox vendor accepted (the most recent 1000)",
                    "parameters": [
                        {
                            "name": "vendor",
                            "in": "path",
                            "required": True,
                            "description": "the name of a vendor of kind sandbox",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": answer(
                            {"type": "array", "items": ref("SandboxEntry")},
                            "accepted messages, oldest first",
                        ),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "getMetrics",
                    "summary": "Prometheus metrics, text exposition format"
                    " (not served with metrics.enabled: false)",
                    "responses": {
                        "200": {
                            "description": "every mailmux_* metric",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _UNAUTHORIZED,
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": answer(
                            {"type": "object", "required": ["openapi", "paths"]},
                            "OpenAPI 3.1",
                        )
                    },
                }
            },
        },
    }


#: The document for the default limits.
OPENAPI: Schema = openapi_document()
