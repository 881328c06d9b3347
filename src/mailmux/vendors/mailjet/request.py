"""A Mailjet `POST /v3.1/send` body read into Messages, one per `Messages` entry.

Shared by the ingress (`inbound`) and the emulator (`emulated`), so Mailjet's
request is parsed once. Each entry is read with `Globals` applied to it (a
shallow merge: an entry's own property replaces the global one, `Headers`
included) and checked on its own, as Mailjet checks them: `read_send` gives
every entry's Message or problems, and the caller decides what a problem in
one entry means for the others (Mailjet sends the valid ones; mailmux's
ingress takes a request whole or not at all). Problems of the call itself
(the body is not JSON, `Messages` unusable) raise `ShapeError`. The
properties of one message are read in `fields`.

Properties and what becomes of them (Mailjet's Send API v3.1 reference):

- carried: From, To, Cc, Bcc, ReplyTo (one address), Subject, TextPart,
  HTMLPart, Headers, Attachments, InlinedAttachments (`ContentID` → the
  part's content id), CustomCampaign → the one tag, CustomID →
  metadata["CustomID"], EventPayload → metadata: its entries when it is a
  JSON object of strings, else metadata["EventPayload"] as given.
- dropped when translated (delivery is the same, only Mailjet's tracking or
  queueing differs): TrackOpens, TrackClicks, Priority, and top-level
  AdvanceErrorHandling (more detailed errors only), SandboxMode false.
- exclusive to Mailjet (a vendor of another ESP would send something else):
  top-level SandboxMode true (Mailjet validates and sends nothing: translated
  it would be real mail), TemplateID, TemplateLanguage, Variables,
  TemplateErrorReporting, TemplateErrorDeliver, Sender, DeduplicateCampaign
  true, MonitoringCategory, URLTags, and any property this module does not
  know — unless its value is null, false or empty.

Checks: Mailjet's own (From and a non-empty To, {Email, Name} objects, a
body, at most 50 recipients / attachments / headers / messages, X-MJ-* and
X-Mailjet-* headers refused (send-0011), attachments of at most 15 MB
together, each with Filename, ContentType and Base64Content) and the rules
every ingress shares (`Checker`: header injection in the subject, header
names and values, display names, tag and metadata; addresses; sizes;
`limits.max_recipients`). Where the two differ the stricter wins. Deviation:
a template's own sender is not consulted, so From is always required.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mailmux.message import (
    FieldError,
    Message,
    MessageLimits,
    Original,
    parts_size,
)
from mailmux.native import JsonChecker
from mailmux.vendors.inbound import Failure, ShapeError
from mailmux.vendors.mailjet import fields
from mailmux.vendors.mailjet.fields import MAX_ITEMS
from mailmux.vendors.mailjet.replies import MALFORMED_JSON, Echo

KIND = "mailjet"
ENDPOINT_NAME = "send"
MAX_ATTACHMENT_BYTES = 15 * 2**20  # attachments and inline parts of one message, decoded
_CARRIED = frozenset(
    {"From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "TextPart", "HTMLPart", "Headers"}
    | {"Attachments", "InlinedAttachments", "CustomCampaign", "CustomID", "EventPayload"}
)
_DROPPED = frozenset({"TrackOpens", "TrackClicks", "Priority"})
_TOP_LEVEL = frozenset({"Messages", "Globals", "SandboxMode", "AdvanceErrorHandling"})


@dataclass(frozen=True, slots=True)
class Item:
    """One `Messages` entry: as sent, and its Message or its problems (paths relative to it)."""

    entry: Mapping[str, Any]
    message: Message | None
    errors: tuple[FieldError, ...]
    echo: Echo


@dataclass(frozen=True, slots=True)
class Sent:
    """A send request whose call-level shape is right; `sandbox` is SandboxMode true."""

    document: Mapping[str, Any]
    items: tuple[Item, ...]
    sandbox: bool


def read_send(
    body: bytes,
    content_type: str,
    *,
    now: float,
    limits: MessageLimits,
    keep_original: bool = True,
) -> Sent:
    """Every entry of the request read; ShapeError when the call as a whole is refused.

    `keep_original` sets each Message's `original` (the body, narrowed to the
    entry when there are several); the emulator, which forwards nothing,
    leaves it off.
    """
    del now  # Mailjet has no scheduled send: nothing here depends on the time
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ShapeError(Failure.INVALID_JSON, MALFORMED_JSON) from None
    if not isinstance(document, dict):
        raise _call_error("", "invalid_type", "Type mismatch: the body must be a JSON object.")
    entries = _entries(document.get("Messages"))
    defaults = document.get("Globals")
    if defaults is None:
        defaults = {}
    elif not isinstance(defaults, dict):
        raise _call_error("Globals", "invalid_type", "Type mismatch: Globals must be an object.")
    sandbox = document.get("SandboxMode")
    if sandbox is not None and not isinstance(sandbox, bool):
        raise _call_error("SandboxMode", "invalid_type", "Type mismatch: expected a boolean.")
    exclusive = [k for k, v in document.items() if k not in _TOP_LEVEL and not _is_default(v)]
    if sandbox:
        exclusive.append("SandboxMode")
    items = []
    for entry in entries:
        original = None
        if keep_original:
            narrowed = (
                body if len(entries) == 1 else orjson.dumps({**document, "Messages": [entry]})
            )
            original = Original(KIND, ENDPOINT_NAME, narrowed, content_type, tuple(exclusive))
        items.append(_item(entry, {**defaults, **entry}, limits, original))
    return Sent(document, tuple(items), sandbox is True)


def _call_error(path: str, code: str, message: str) -> ShapeError:
    return ShapeError(Failure.INVALID_REQUEST, message, [FieldError(path, code, message)])


def _entries(value: object) -> list[dict[str, Any]]:
    if value is None:
        raise _call_error("Messages", "required", "Messages is mandatory but missing.")
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise _call_error(
            "Messages", "invalid_type", "Type mismatch: Messages must be an array of objects."
        )
    if not value:
        raise _call_error("Messages", "empty_array", "Messages must not be an empty array.")
    if len(value) > MAX_ITEMS:
        raise _call_error("Messages", "too_many", f"Messages holds more than {MAX_ITEMS} items.")
    return value


def _is_default(value: object) -> bool:
    """A value that asks for nothing: null, false, "" or an empty array or object."""
    return value is None or value is False or value in ("", [], {})


def _item(
    entry: Mapping[str, Any],
    merged: Mapping[str, Any],
    limits: MessageLimits,
    original: Original | None,
) -> Item:
    check = JsonChecker(limits)
    get = merged.get
    sender = fields.address(check, get("From"), "From", required=True)
    to = fields.recipients(check, get("To"), "To", required=True)
    cc = fields.recipients(check, get("Cc"), "Cc")
    bcc = fields.recipients(check, get("Bcc"), "Bcc")
    count, most = len(to) + len(cc) + len(bcc), min(MAX_ITEMS, limits.max_recipients)
    if count > most:
        check.fail("To", "too_many_recipients", f"{count} recipients; the limit is {most}.")
    reply_to = fields.address(check, get("ReplyTo"), "ReplyTo")
    subject = check.string(get("Subject"), "Subject", header=True) or ""
    text = check.string(get("TextPart"), "TextPart") or None
    html = check.string(get("HTMLPart"), "HTMLPart") or None
    if not (text or html or not _is_default(get("TemplateID"))):
        check.fail("", "no_body", 'At least "HTMLPart", "TextPart" or "TemplateID" is required.')
    headers = fields.headers(check, get("Headers"))
    attachments = fields.attachments(check, get("Attachments"), "Attachments", inline=False)
    attachments += fields.attachments(
        check, get("InlinedAttachments"), "InlinedAttachments", inline=True
    )
    if (size := sum(len(a.content) for a in attachments)) > MAX_ATTACHMENT_BYTES:
        check.fail(
            "Attachments", "too_large", f"attachments total {size} bytes; the limit is 15 MB"
        )
    tags = fields.campaign(check, get("CustomCampaign"))
    metadata = fields.metadata(check, get("EventPayload"), get("CustomID"))
    fields.dropped(check, merged)
    shown = (*((sender,) if sender else ()), *to, *cc, *((reply_to,) if reply_to else ()))
    size = parts_size(shown, subject, text, html, headers, attachments)
    if size > limits.max_message_bytes:
        check.fail(
            "", "too_large", f"the message is {size} bytes; the limit is {limits.max_message_bytes}"
        )
    echo = _echo(merged)
    if check.errors or sender is None:
        return Item(entry, None, tuple(check.errors), echo)
    if original is not None:
        own = [k for k, v in merged.items() if k not in _CARRIED | _DROPPED and not _is_default(v)]
        if own:
            original = Original(
                original.shape,
                original.endpoint,
                original.body,
                original.content_type,
                (*original.exclusive, *own),
            )
    message = Message(
        sender,
        to,
        cc,
        bcc,
        (reply_to,) if reply_to else (),
        subject,
        text,
        html,
        headers,
        tuple(attachments),
        tags,
        metadata,
        original=original,
    )
    return Item(entry, message, (), echo)


def _echo(merged: Mapping[str, Any]) -> Echo:
    custom_id = merged.get("CustomID")
    return Echo(
        custom_id if isinstance(custom_id, str) else "",
        _emails(merged.get("To")),
        _emails(merged.get("Cc")),
        _emails(merged.get("Bcc")),
    )


def _emails(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        item["Email"]
        for item in value
        if isinstance(item, dict) and isinstance(item.get("Email"), str)
    )


def first_problem(items: Sequence[Item]) -> FieldError | None:
    """The first problem of the first refused entry, if any."""
    return next((item.errors[0] for item in items if item.errors), None)
