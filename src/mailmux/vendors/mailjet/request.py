"""A Mailjet `POST /v3.1/send` body read into Messages, one per `Messages` entry.

Shared by the ingress (`inbound`) and the emulator (`emulated`), so Mailjet's
request is parsed once. Each entry is read with `Globals` applied to it (a
shallow merge: an entry's own property replaces the global one, `Headers`
included) and checked on its own, as Mailjet checks them: `read_send` gives
every entry's Message or problems, and the caller decides what a problem in
one entry means for the others (Mailjet sends the valid ones; mailmux's
ingress takes a request whole or not at all). Problems of the call itself
(the body is not JSON, `Messages` unusable) raise `ShapeError`.

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

from mailmux.addresses import AddressError, clean_name, normalize
from mailmux.message import (
    Address,
    Attachment,
    FieldError,
    Message,
    MessageLimits,
    Original,
    parts_size,
)
from mailmux.native import JsonChecker
from mailmux.vendors.inbound import Failure, ShapeError
from mailmux.vendors.mailjet.replies import MALFORMED_JSON, Echo

KIND = "mailjet"
ENDPOINT_NAME = "send"
MAX_ITEMS = 50  # Mailjet's cap on Messages, recipients, each attachment array and Headers
MAX_ATTACHMENT_BYTES = 15 * 2**20  # attachments and inline parts of one message, decoded
MAX_CAMPAIGN_CHARS = 255
_TRACKING = frozenset({"account_default", "disabled", "enabled"})
_CARRIED = frozenset(
    {"From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "TextPart", "HTMLPart", "Headers"}
    | {"Attachments", "InlinedAttachments", "CustomCampaign", "CustomID", "EventPayload"}
)
_DROPPED = frozenset({"TrackOpens", "TrackClicks", "Priority"})
_TOP_LEVEL = frozenset({"Messages", "Globals", "SandboxMode", "AdvanceErrorHandling"})
_RESERVED_HEADER_PREFIXES = ("x-mj-", "x-mailjet-")
_ATTACHMENT_FIELDS = ("Filename", "ContentType", "Base64Content")


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
    sender = _address(check, get("From"), "From", required=True)
    to = _recipients(check, get("To"), "To", required=True)
    cc = _recipients(check, get("Cc"), "Cc")
    bcc = _recipients(check, get("Bcc"), "Bcc")
    count, most = len(to) + len(cc) + len(bcc), min(MAX_ITEMS, limits.max_recipients)
    if count > most:
        check.fail("To", "too_many_recipients", f"{count} recipients; the limit is {most}.")
    reply_to = _address(check, get("ReplyTo"), "ReplyTo")
    subject = check.string(get("Subject"), "Subject", header=True) or ""
    text = check.string(get("TextPart"), "TextPart") or None
    html = check.string(get("HTMLPart"), "HTMLPart") or None
    if not (text or html or not _is_default(get("TemplateID"))):
        check.fail("", "no_body", 'At least "HTMLPart", "TextPart" or "TemplateID" is required.')
    headers = _headers(check, get("Headers"))
    attachments = _attachments(check, get("Attachments"), "Attachments", inline=False)
    attachments += _attachments(check, get("InlinedAttachments"), "InlinedAttachments", inline=True)
    if (size := sum(len(a.content) for a in attachments)) > MAX_ATTACHMENT_BYTES:
        check.fail(
            "Attachments", "too_large", f"attachments total {size} bytes; the limit is 15 MB"
        )
    tags = _campaign(check, get("CustomCampaign"))
    metadata = _metadata(check, get("EventPayload"), get("CustomID"))
    _dropped(check, merged)
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


def _address(
    check: JsonChecker, value: object, path: str, *, required: bool = False
) -> Address | None:
    """A Mailjet `{Email, Name}` object."""
    if value is None:
        if required:
            check.fail(path, "required", f"{path} is mandatory but missing from the input.")
        return None
    if not isinstance(value, dict):
        check.wrong_type(path, value, "an {Email, Name} object")
        return None
    email, name = value.get("Email"), value.get("Name")
    if email is None or email == "":
        check.fail(f"{path}.Email", "empty", "Email must be a non-empty string.")
        return None
    if not isinstance(email, str):
        check.wrong_type(f"{path}.Email", email, "a string")
        return None
    display = check.string(name, f"{path}.Name")
    try:
        address = normalize(email)
    except AddressError as err:
        invalid = f'"{email}" is an invalid email address.'
        check.fail(
            f"{path}.Email", err.code, invalid if err.code == "invalid_address" else err.reason
        )
        return None
    try:
        shown = None if display is None else clean_name(display)
    except AddressError as err:
        check.fail(f"{path}.Name", err.code, err.reason)
        return None
    return Address(address, shown)


def _recipients(
    check: JsonChecker, value: object, path: str, *, required: bool = False
) -> tuple[Address, ...]:
    if value is None:
        if required:
            check.fail(path, "required", f"{path} is mandatory but missing from the input.")
        return ()
    if not isinstance(value, list):
        check.wrong_type(path, value, "an array of {Email, Name} objects")
        return ()
    if required and not value:
        check.fail(path, "empty_array", f"{path} must not be an empty array.")
    found = (_address(check, item, f"{path}[{i}]") for i, item in enumerate(value))
    return tuple(a for a in found if a is not None)


def _headers(check: JsonChecker, value: object) -> dict[str, str]:
    if isinstance(value, dict) and len(value) > MAX_ITEMS:
        check.fail("Headers", "too_many", f"Headers holds more than {MAX_ITEMS} items.")
        return {}
    headers = check.headers(value, at="Headers")
    for name in list(headers):
        if name.lower().startswith(_RESERVED_HEADER_PREFIXES):
            check.fail(
                f"Headers.{name}",
                "reserved_header",
                f"header {name!r} is set through a message property, not Headers",
            )
            del headers[name]
    return headers


def _attachments(check: JsonChecker, value: object, path: str, *, inline: bool) -> list[Attachment]:
    if value is None:
        return []
    if not isinstance(value, list):
        check.wrong_type(path, value, "an array of attachment objects")
        return []
    if len(value) > MAX_ITEMS:
        check.fail(path, "too_many", f"{path} holds more than {MAX_ITEMS} items.")
        return []
    found = (_attachment(check, item, f"{path}[{i}]", inline) for i, item in enumerate(value))
    return [a for a in found if a is not None]


def _attachment(check: JsonChecker, item: object, path: str, inline: bool) -> Attachment | None:
    if not isinstance(item, dict):
        check.wrong_type(path, item, "an attachment object")
        return None
    before = len(check.errors)
    for name in _ATTACHMENT_FIELDS:
        if not isinstance(item.get(name), str) or not item[name]:
            check.fail(f"{path}.{name}", "empty", f"{name} must be a non-empty string.")
    if len(check.errors) > before:
        return None
    filename = check.filename(item["Filename"], f"{path}.Filename")
    content = check.base64(item["Base64Content"], f"{path}.Base64Content")
    marked = len(check.errors)
    content_type = check.content_type(item["ContentType"], filename or "", path)
    for index in range(marked, len(check.errors)):  # name the field as Mailjet does
        problem = check.errors[index]
        check.errors[index] = FieldError(f"{path}.ContentType", problem.code, problem.message)
    content_id = None
    if inline:
        content_id = check.content_id(item.get("ContentID"), f"{path}.ContentID")
    if len(check.errors) > before or filename is None or content is None:
        return None
    return Attachment(filename, content, content_type, inline, content_id)


def _campaign(check: JsonChecker, value: object) -> tuple[str, ...]:
    campaign = check.string(value, "CustomCampaign", header=True)
    if not campaign:
        return ()
    if len(campaign) > MAX_CAMPAIGN_CHARS:
        check.fail("CustomCampaign", "too_large", f"is over {MAX_CAMPAIGN_CHARS} characters")
        return ()
    return (campaign,)


def _metadata(check: JsonChecker, payload: object, custom_id: object) -> dict[str, str]:
    """EventPayload's entries (or the string itself) and CustomID, as header-safe strings."""
    metadata: dict[str, str] = {}
    text = check.string(payload, "EventPayload")
    if text:
        entries = _string_object(text)
        if entries is None:
            entries = {"EventPayload": text}
        for key, value in entries.items():
            name = check.string(key, "EventPayload", header=True)
            kept = check.string(value, "EventPayload", header=True)
            if name is not None and kept is not None:
                metadata[name] = kept
    identifier = check.string(custom_id, "CustomID", header=True)
    if identifier:
        metadata["CustomID"] = identifier
    return metadata


def _string_object(text: str) -> dict[str, str] | None:
    """`text` as a JSON object whose values are all strings, or None."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return value
    return None


def _dropped(check: JsonChecker, merged: Mapping[str, Any]) -> None:
    """The droppable properties still have to be what Mailjet takes (mj-0005)."""
    for name in ("TrackOpens", "TrackClicks"):
        value = merged.get(name)
        if value is not None and not (isinstance(value, str) and value in _TRACKING):
            check.fail(
                name, "invalid_value", f"{name} must be one of {', '.join(sorted(_TRACKING))}."
            )
    priority = merged.get("Priority")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        check.wrong_type("Priority", priority, "an integer")


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
