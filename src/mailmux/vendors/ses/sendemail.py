"""A SendEmail body read into a Message, and the fields of it only SES can carry.

How the body becomes a Message:

- `FromEmailAddress`, `Destination.{To,Cc,Bcc}Addresses` and
  `ReplyToAddresses` are `Name <addr>` strings; a display name SES wants
  RFC 2047-encoded (`=?utf-8?…?=`) is decoded, and checked for line breaks
  after decoding too.
- `Content.Simple`: subject, text and HTML bodies, `Headers` (at most 15, as
  SES), `Attachments` (base64 `RawContent`; `ContentDisposition: INLINE` with
  a `ContentId` is an inline part; INLINE without one cannot be referenced, so
  it is a plain attachment when translated).
- `Content.Raw.Data`: the MIME message as `raw_mime`, parsed for its fields;
  `Destination`, when given, is the envelope and `FromEmailAddress` stands in
  for a missing From, as SES does (`ReplyToAddresses` is the MIME's business
  then, and ignored).
- `EmailTags` become metadata, name → value: SES's tags are pairs, and
  metadata keeps both halves (the outbound vendor turns them back into the
  same tags). Names and values take SES's charset; a name given twice is
  refused, since one of the values would be lost.

Only SES can carry `Content.Template` (the content lives in SES),
`ListManagementOptions` (SES's unsubscribe handling), `FeedbackForwarding-
EmailAddress` (where bounces go), `EndpointId` and any field this module does
not know: they make the message `exclusive`, so only SES vendors send it.
Dropped when translating, because they configure the account rather than the
message: `ConfigurationSetName`, `ConfigurationOverrides` (tracking),
`TenantName`, the `…IdentityArn`s, `Charset`s (the JSON text is Unicode
already), and an attachment's `ContentDescription` and
`ContentTransferEncoding`.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from email.errors import MessageError
from email.header import decode_header, make_header
from typing import Any

from mailmux.addresses import has_line_break
from mailmux.message import (
    Address,
    Attachment,
    InvalidMessage,
    Message,
    MessageLimits,
    parts_size,
)
from mailmux.mime import parse_mime
from mailmux.native import JsonChecker
from mailmux.vendors.inbound import Failure, ShapeError

MAX_RECIPIENTS = 50  # SES v2, per message
MAX_HEADERS = 15  # Content.Simple.Headers
_TOP = frozenset({"FromEmailAddress", "Destination", "ReplyToAddresses", "Content", "EmailTags"})
_EXCLUSIVE = frozenset({"FeedbackForwardingEmailAddress", "ListManagementOptions", "EndpointId"})
_DROPPED = frozenset(
    {"ConfigurationSetName", "ConfigurationOverrides", "TenantName"}
    | {"FromEmailAddressIdentityArn", "FeedbackForwardingEmailAddressIdentityArn"}
)
_DESTINATION = ("ToAddresses", "CcAddresses", "BccAddresses")
_CONTENT = ("Simple", "Raw", "Template")
_SIMPLE = frozenset({"Subject", "Body", "Headers", "Attachments"})
_TEXT = frozenset({"Data", "Charset"})
_ATTACHMENT = frozenset(
    {"RawContent", "FileName", "ContentType", "ContentDisposition", "ContentId"}
    | {"ContentDescription", "ContentTransferEncoding"}
)
_DISPOSITIONS = frozenset({"ATTACHMENT", "INLINE"})


def read(body: object, now: float, limits: MessageLimits) -> tuple[Message, dict[str, str]]:
    """The Message of a decoded SendEmail body and its metadata (from `EmailTags`);
    ShapeError with every problem."""
    check = JsonChecker(limits)
    if not isinstance(body, dict):
        check.fail("", "invalid_type", "The request body must be a JSON object.")
        raise ShapeError(Failure.INVALID_REQUEST, str(check.errors[0]), check.errors)
    content = body.get("Content")
    kinds = [k for k in _CONTENT if isinstance(content, dict) and content.get(k) is not None]
    if len(kinds) != 1 or not isinstance(content, dict):
        check.fail("Content", "invalid_content", "must hold exactly one of Simple, Raw or Template")
        raise ShapeError(Failure.INVALID_REQUEST, str(check.errors[0]), check.errors)
    (kind,) = kinds
    part = content[kind]
    at = f"Content.{kind}"
    if not isinstance(part, dict):
        check.wrong_type(at, part, "an object")
        raise ShapeError(Failure.INVALID_REQUEST, str(check.errors[0]), check.errors)
    metadata = _tags(check, body.get("EmailTags"))
    if kind == "Raw":
        message = _raw(check, body, part, now, limits)
    else:
        message = _parts(check, body, part, at, kind == "Simple", limits)
    if check.errors or message is None:
        raise ShapeError(Failure.INVALID_REQUEST, str(check.errors[0]), check.errors)
    return message, metadata


def _parts(
    check: JsonChecker,
    body: Mapping[str, Any],
    part: Mapping[str, Any],
    at: str,
    simple: bool,
    limits: MessageLimits,
) -> Message | None:
    """Simple content (or a Template's envelope: its content is SES's to render)."""
    sender = None
    if not isinstance(body.get("FromEmailAddress"), str) or not body["FromEmailAddress"]:
        check.fail("FromEmailAddress", "required", "FromEmailAddress is required")
    else:
        sender = _mailbox(check, body["FromEmailAddress"], "FromEmailAddress")
    to, cc, bcc = _destination(check, body.get("Destination"))
    if not (to or cc or bcc) and not check.errors:
        check.fail("Destination", "required", "at least one recipient is required")
    reply_to = _mailboxes(check, body.get("ReplyToAddresses"), "ReplyToAddresses")
    subject, text, html = "", None, None
    if simple:
        subject = _data(check, part.get("Subject"), f"{at}.Subject", header=True) or ""
        text, html = _body(check, part.get("Body"), f"{at}.Body")
    headers = _headers(check, part.get("Headers"), f"{at}.Headers")
    attachments = _attachments(check, part.get("Attachments"), f"{at}.Attachments")
    shown = (*((sender,) if sender else ()), *to, *cc, *reply_to)
    size = parts_size(shown, subject, text, html, headers, attachments)
    if size > limits.max_message_bytes:
        check.fail(
            "",
            "too_large",
            f"Message length is {size} bytes; the limit is {limits.max_message_bytes}",
        )
    if sender is None:
        return None
    return Message(sender, to, cc, bcc, reply_to, subject, text, html, headers, tuple(attachments))


def _raw(
    check: JsonChecker,
    body: Mapping[str, Any],
    part: Mapping[str, Any],
    now: float,
    limits: MessageLimits,
) -> Message | None:
    """Raw content: the MIME message, with Destination as its envelope when given."""
    data = part.get("Data")
    raw = None
    if not isinstance(data, str):
        check.wrong_type("Content.Raw.Data", data, "the message, base64-encoded")
    else:
        try:
            raw = binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            check.fail("Content.Raw.Data", "invalid_base64", "is not valid base64")
    sender = body.get("FromEmailAddress")
    if sender is not None and not isinstance(sender, str):
        check.wrong_type("FromEmailAddress", sender, "a string")
        sender = None
    envelope = _destination_strings(check, body.get("Destination"))
    if raw is None or check.errors:
        return None
    try:
        return parse_mime(raw, envelope_from=sender, envelope_to=envelope, limits=limits, now=now)
    except InvalidMessage as err:
        check.errors.extend(err.errors)
        return None


def _destination(
    check: JsonChecker, value: object
) -> tuple[tuple[Address, ...], tuple[Address, ...], tuple[Address, ...]]:
    if value is None:
        return (), (), ()
    if not isinstance(value, dict):
        check.wrong_type("Destination", value, "an object")
        return (), (), ()
    to, cc, bcc = (_mailboxes(check, value.get(k), f"Destination.{k}") for k in _DESTINATION)
    count = len(to) + len(cc) + len(bcc)
    if count > MAX_RECIPIENTS:
        check.fail(
            "Destination",
            "too_many_recipients",
            f"Recipient count exceeds {MAX_RECIPIENTS} ({count})",
        )
    check.recipients(count)
    return to, cc, bcc


def _destination_strings(check: JsonChecker, value: object) -> list[str]:
    """Raw's envelope: Destination's addresses as given (parse_mime checks them)."""
    to, cc, bcc = _destination(check, value)
    return [a.email for a in (*to, *cc, *bcc)]


def _mailboxes(check: JsonChecker, value: object, path: str) -> tuple[Address, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        check.wrong_type(path, value, "an array of addresses")
        return ()
    found = (_mailbox(check, item, f"{path}[{i}]") for i, item in enumerate(value))
    return tuple(a for a in found if a is not None)


def _mailbox(check: JsonChecker, value: object, path: str) -> Address | None:
    """`Name <addr>`, the name decoded when SES's clients RFC 2047-encoded it."""
    text = check.string(value, path, nullable=False)
    if text is None:
        return None
    address = check.mailbox(text, path)
    if address is None or address.name is None or "=?" not in address.name:
        return address
    try:
        name = str(make_header(decode_header(address.name)))
    except (MessageError, UnicodeError, LookupError, ValueError):
        return address  # not an encoded word after all: the name as written
    if has_line_break(name):
        check.fail(path, "header_injection", f"display name {name[:80]!r} contains a line break")
        return None
    return Address(address.email, name.strip() or None)


def _data(check: JsonChecker, value: object, path: str, *, header: bool = False) -> str | None:
    """A `{Data, Charset}` content object's text."""
    if not isinstance(value, dict) or value.get("Data") is None:
        check.fail(f"{path}.Data", "required", f"{path}.Data is required")
        return None
    return check.string(value["Data"], f"{path}.Data", header=header)


def _body(check: JsonChecker, value: object, path: str) -> tuple[str | None, str | None]:
    parts = [value.get(k) for k in ("Text", "Html")] if isinstance(value, dict) else []
    if not any(p is not None for p in parts):
        check.fail(path, "required", f"{path} needs Text or Html, each with Data")
        return None, None
    text, html = (
        None if p is None else _data(check, p, f"{path}.{k}") or None
        for p, k in zip(parts, ("Text", "Html"), strict=True)
    )
    return text, html


def _headers(check: JsonChecker, value: object, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        check.wrong_type(path, value, "an array of {Name, Value}")
        return {}
    if len(value) > MAX_HEADERS:
        check.fail(path, "too_many_headers", f"at most {MAX_HEADERS} headers, not {len(value)}")
    given: dict[str, object] = {}
    seen: set[str] = set()
    for index, item in enumerate(value):
        name = item.get("Name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            check.wrong_type(f"{path}[{index}].Name", name, "a header name")
        elif name.lower() in seen:
            check.fail(f"{path}[{index}]", "duplicate_header", f"header {name!r} is given twice")
        else:
            seen.add(name.lower())
            given[name] = item.get("Value")
    return check.headers(given, at=path)


def _attachments(check: JsonChecker, value: object, path: str) -> list[Attachment]:
    if value is None:
        return []
    if not isinstance(value, list):
        check.wrong_type(path, value, "an array of attachments")
        return []
    found = (_attachment(check, item, f"{path}[{i}]") for i, item in enumerate(value))
    return [a for a in found if a is not None]


def _attachment(check: JsonChecker, item: object, path: str) -> Attachment | None:
    if not isinstance(item, dict):
        check.wrong_type(path, item, "an attachment object")
        return None
    before = len(check.errors)
    filename = None
    if item.get("FileName") in (None, ""):
        check.fail(f"{path}.FileName", "required", "an attachment needs a FileName")
    else:
        filename = check.filename(item["FileName"], f"{path}.FileName")
    raw = item.get("RawContent")
    if not isinstance(raw, str):
        check.wrong_type(f"{path}.RawContent", raw, "base64 content")
    content = check.base64(raw if isinstance(raw, str) else None, f"{path}.RawContent")
    given_type = check.string(item.get("ContentType"), f"{path}.ContentType", header=True)
    content_type = check.content_type(
        None if given_type is None else given_type.partition(";")[0].strip(),
        filename or "",
        path,
    )
    disposition = item.get("ContentDisposition")
    if disposition is not None and disposition not in _DISPOSITIONS:
        check.fail(
            f"{path}.ContentDisposition",
            "invalid_disposition",
            f"must be ATTACHMENT or INLINE, not {str(disposition)[:40]!r}",
        )
    content_id = check.content_id(item.get("ContentId"), f"{path}.ContentId")
    if len(check.errors) > before or filename is None or content is None:
        return None
    inline = disposition == "INLINE" and content_id is not None
    return Attachment(filename, content, content_type, inline, content_id)


def _tags(check: JsonChecker, value: object) -> dict[str, str]:
    """EmailTags as metadata: name → value (module docstring)."""
    if value is None:
        return {}
    if not isinstance(value, list):
        check.wrong_type("EmailTags", value, "an array of {Name, Value}")
        return {}
    metadata: dict[str, str] = {}
    for index, tag in enumerate(value):
        path = f"EmailTags[{index}]"
        name = tag.get("Name") if isinstance(tag, dict) else None
        text = tag.get("Value") if isinstance(tag, dict) else None
        if not (isinstance(name, str) and isinstance(text, str)):
            check.fail(path, "invalid_tag", "Invalid tag: must be {Name, Value} strings")
        elif not (_valid_tag(name) and _valid_tag(text)):
            check.fail(
                path,
                "invalid_tag",
                f"Invalid tag {name[:40]!r}: names and values take 1 to 256 ASCII letters,"
                " digits, _ and -",
            )
        elif name in metadata:
            check.fail(path, "invalid_tag", f"Invalid tag {name!r}: the name is given twice")
        else:
            metadata[name] = text
    return metadata


def _valid_tag(text: str) -> bool:
    """SES's tag charset: 1 to 256 of ASCII letters, digits, `_` and `-`."""
    return (
        0 < len(text) <= 256 and text.isascii() and text.replace("_", "").replace("-", "").isalnum()
    )


def exclusive(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The fields present that only SES can carry (module docstring)."""
    found = [
        key
        for key, value in body.items()
        if value is not None and (key in _EXCLUSIVE or key not in _TOP | _DROPPED)
    ]
    content = body["Content"]
    found += [
        f"Content.{key}"
        for key, value in content.items()
        if value is not None and (key == "Template" or key not in _CONTENT)
    ]
    simple = content.get("Simple")
    if isinstance(simple, dict):
        found += _unknown(simple, _SIMPLE, "Content.Simple")
        for key in ("Subject",):
            found += _unknown(simple.get(key), _TEXT, f"Content.Simple.{key}")
        body_part = simple.get("Body")
        found += _unknown(body_part, frozenset({"Text", "Html"}), "Content.Simple.Body")
        if isinstance(body_part, dict):
            for key in ("Text", "Html"):
                found += _unknown(body_part.get(key), _TEXT, f"Content.Simple.Body.{key}")
        for index, item in enumerate(simple.get("Attachments") or []):
            found += _unknown(item, _ATTACHMENT, f"Content.Simple.Attachments[{index}]")
    raw = content.get("Raw")
    found += _unknown(raw, frozenset({"Data"}), "Content.Raw")
    return tuple(found)


def _unknown(value: object, known: frozenset[str], path: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    return [f"{path}.{key}" for key, v in value.items() if v is not None and key not in known]
