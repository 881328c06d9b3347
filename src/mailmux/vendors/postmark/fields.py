"""Postmark's field shapes read into the parts of a Message, every problem into the checker.

Each reader takes the field's JSON value (None when absent or null, as
postmarker sends unset arguments), reports what is wrong at `at + field` and
returns what it could read; the shared rules (header injection, addresses,
sizes, base64) are `JsonChecker`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailmux.message import Address, Attachment
from mailmux.native import JsonChecker

_TRACK_LINKS = frozenset({"None", "HtmlAndText", "HtmlOnly", "TextOnly"})
_ATTACHMENT_FIELDS = frozenset({"Name", "Content", "ContentType", "ContentID"})


def sender(check: JsonChecker, value: object, at: str) -> Address | None:
    """`From`, required: one mailbox (a non-string is reported by the type check)."""
    if not value:
        check.fail(at + "From", "required", "a sender address is required")
        return None
    return check.mailbox(value, at + "From") if isinstance(value, str) else None


def text(value: object) -> str | None:
    """A body: empty means none, as Postmark reads it."""
    return value if isinstance(value, str) and value else None


def addresses(check: JsonChecker, value: object, path: str) -> tuple[Address, ...]:
    """A comma-separated list of mailboxes (`To`, `Cc`, `Bcc`)."""
    if not isinstance(value, str):
        return ()  # absent, or already reported as not a string
    found = (check.mailbox(part, path) for part in split_addresses(value))
    return tuple(a for a in found if a is not None)


def reply_to(check: JsonChecker, value: object, at: str) -> tuple[Address, ...]:
    """`ReplyTo`: a list like To, or an array of them (postmarker does not join a list)."""
    path = at + "ReplyTo"
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            check.wrong_type(path, value, "a string or an array of strings")
            return ()
        return tuple(a for v in value for a in addresses(check, v, path))
    if value is not None and not isinstance(value, str):
        check.wrong_type(path, value, "a string")
    return addresses(check, value, path)


def split_addresses(text: str) -> list[str]:
    """A comma-separated address list; commas in quotes or `<…>` do not split, blanks drop."""
    parts: list[str] = []
    start, quoted, escaped, angle = 0, False, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in "<>":
            angle = char == "<"
        elif char == "," and not (quoted or angle):
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def headers(check: JsonChecker, value: object, at: str) -> dict[str, str]:
    """`Headers [{Name, Value}]` as a dict; a name given twice (in any case) is refused,
    as a Message holds one value per header."""
    path = at + "Headers"
    if value is None:
        return {}
    if not isinstance(value, list):
        check.wrong_type(path, value, "an array of {Name, Value} objects")
        return {}
    named: dict[str, object] = {}
    for index, entry in enumerate(value):
        name = entry.get("Name") if isinstance(entry, dict) else None
        if not (isinstance(name, str) and name):
            check.fail(f"{path}[{index}].Name", "required", "a header needs a Name (a string)")
        elif any(name.lower() == seen.lower() for seen in named):
            check.fail(f"{path}[{index}].Name", "duplicate_header", f"{name!r} is given twice")
        else:
            named[name] = entry.get("Value", "") if isinstance(entry, dict) else ""
    return check.headers(named, at=path)


def attachments(check: JsonChecker, value: object, at: str) -> list[Attachment]:
    """`Attachments [{Name, Content, ContentType, ContentID}]`."""
    path = at + "Attachments"
    if value is None:
        return []
    if not isinstance(value, list):
        check.wrong_type(path, value, "an array of attachment objects")
        return []
    found = (attachment(check, item, f"{path}[{index}]") for index, item in enumerate(value))
    return [a for a in found if a is not None]


def attachment(check: JsonChecker, item: object, path: str) -> Attachment | None:
    """One attachment; a ContentID (`cid:` dropped) makes it inline. Content may be
    MIME-wrapped base64 (postmarker passes a MIME part's payload as it is)."""
    if not isinstance(item, dict):
        check.wrong_type(path, item, "an attachment object")
        return None
    before = len(check.errors)
    unknown = sorted(set(item) - _ATTACHMENT_FIELDS)
    if unknown:
        check.fail(path, "unknown_field", f"unknown attachment fields {', '.join(unknown)}")
    filename = None
    if not item.get("Name"):
        check.fail(f"{path}.Name", "required", "an attachment needs a Name")
    else:
        filename = check.filename(item["Name"], f"{path}.Name")
    content = check.base64(check.required(item, "Content", path), f"{path}.Content")
    content_type = check.content_type(item.get("ContentType"), filename or "", path)
    raw_cid = item.get("ContentID")
    content_id = None
    if raw_cid is not None and raw_cid != "":
        cid = raw_cid.removeprefix("cid:") if isinstance(raw_cid, str) else raw_cid
        content_id = check.content_id(cid, f"{path}.ContentID")
    if len(check.errors) > before or filename is None or content is None:
        return None
    return Attachment(filename, content, content_type, content_id is not None, content_id)


def metadata(check: JsonChecker, value: object, at: str) -> dict[str, str]:
    """Metadata values as strings: postmarker sends numbers as they are."""
    path = at + "Metadata"
    if value is None:
        return {}
    if not isinstance(value, dict):
        check.wrong_type(path, value, "an object of strings")
        return {}
    metadata: dict[str, str] = {}
    for key, raw in value.items():
        shown = str(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else raw
        text = check.string(shown, f"{path}.{key}", header=True, nullable=False)
        name = check.string(key, f"{path}.{key!r}", header=True)
        if text is not None and name is not None:
            metadata[name] = text
    return metadata


def tracking(check: JsonChecker, item: Mapping[str, Any], at: str) -> None:
    """TrackOpens and TrackLinks are dropped, but what Postmark would refuse is refused."""
    opens = item.get("TrackOpens")
    if opens is not None and not isinstance(opens, bool):
        check.wrong_type(at + "TrackOpens", opens, "a boolean")
    links = item.get("TrackLinks")
    if links is not None and not (isinstance(links, str) and links in _TRACK_LINKS):
        check.fail(
            at + "TrackLinks",
            "invalid_value",
            f"must be one of {', '.join(sorted(_TRACK_LINKS))}",
        )
