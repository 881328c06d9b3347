"""The fields of one Mailjet message, read into a Message's parts with every problem noted.

Paths in problems are Mailjet's, relative to the message (`To[0].Email`,
`Attachments[1].Base64Content`), as its `ErrorRelatedTo` names them; codes
are the `FieldError` codes `replies` turns into Mailjet's (`empty` → mj-0012,
`invalid_address` → mj-0013, ...). The shared rules come from `JsonChecker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from mailmux.addresses import AddressError, clean_name, normalize
from mailmux.message import Address, Attachment, FieldError
from mailmux.native import JsonChecker

MAX_ITEMS = 50  # Mailjet's cap on recipients, each attachment array and Headers
MAX_CAMPAIGN_CHARS = 255
_TRACKING = frozenset({"account_default", "disabled", "enabled"})
_RESERVED_HEADER_PREFIXES = ("x-mj-", "x-mailjet-")
_ATTACHMENT_FIELDS = ("Filename", "ContentType", "Base64Content")


def address(
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


def recipients(
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
    found = (address(check, item, f"{path}[{i}]") for i, item in enumerate(value))
    return tuple(a for a in found if a is not None)


def headers(check: JsonChecker, value: object) -> dict[str, str]:
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


def attachments(check: JsonChecker, value: object, path: str, *, inline: bool) -> list[Attachment]:
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


def campaign(check: JsonChecker, value: object) -> tuple[str, ...]:
    campaign = check.string(value, "CustomCampaign", header=True)
    if not campaign:
        return ()
    if len(campaign) > MAX_CAMPAIGN_CHARS:
        check.fail("CustomCampaign", "too_large", f"is over {MAX_CAMPAIGN_CHARS} characters")
        return ()
    return (campaign,)


def metadata(check: JsonChecker, payload: object, custom_id: object) -> dict[str, str]:
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


def dropped(check: JsonChecker, merged: Mapping[str, Any]) -> None:
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
