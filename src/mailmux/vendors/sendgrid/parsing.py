"""A SendGrid Mail Send body read into drafts: one Message per personalization.

SendGrid sends each personalization as its own email, so a draft is one
personalization merged with the request's top-level fields: its own
`from`, `subject` and `headers` win over the top-level ones, its
`custom_args` are added to the top-level ones (its keys win), as SendGrid
documents. `categories` become tags, `custom_args` metadata.

What only SendGrid can carry is named in each draft's `exclusive`
(`exclusive_fields`): templates and their data, scheduling, batches,
unsubscribe groups, IP pools, AMP or other content types, mail settings
other than the retired spam check, tracking settings other than click and
open tracking (flags another ESP may ignore), and every field this module
does not know. A setting that is present but explicitly off
(`{"enable": false}`) changes nothing and is not exclusive; a sandbox flag
that is on is, so a translated send never turns a test into real mail.

Problems are collected (`fields.MailSendChecker`) with SendGrid's field
paths and, where its wording is known, SendGrid's messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mailmux.message import Address, FieldError, Message, MessageLimits, Original
from mailmux.vendors.inbound import Failure, ShapeError
from mailmux.vendors.sendgrid.fields import SUBJECT_REQUIRED, MailSendChecker, type_name
from mailmux.vendors.sendgrid.outbound import MAX_RECIPIENTS

#: Top-level fields a Message carries; every other field is SendGrid's alone.
_GENERIC = frozenset(
    {"from", "subject", "personalizations", "content", "attachments", "headers"}
    | {"categories", "custom_args", "reply_to", "reply_to_list"}
)
_PERSONALIZATION_GENERIC = frozenset(
    {"to", "cc", "bcc", "from", "subject", "headers", "custom_args"}
)
#: Settings whose effect another ESP may leave out: tracking flags, a retired check.
_DROPPABLE = {
    "mail_settings": frozenset({"spam_check"}),
    "tracking_settings": frozenset({"click_tracking", "open_tracking"}),
}
#: SendGrid-only fields whose JSON type is checked here, as SendGrid checks it.
_TYPES: Mapping[str, tuple[type, ...]] = {
    "template_id": (str,),
    "batch_id": (str,),
    "ip_pool_name": (str,),
    "send_at": (int,),
    "asm": (dict,),
    "sections": (dict,),
    "mail_settings": (dict,),
    "tracking_settings": (dict,),
}


#: (index of the personalization, its exclusive fields) → the message's `original`.
OriginalFor = Callable[[int, tuple[str, ...]], Original]


@dataclass(frozen=True, slots=True)
class Draft:
    """One personalization as a Message (no `original` yet) and what only SendGrid carries."""

    message: Message
    exclusive: tuple[str, ...]


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object; ShapeError INVALID_JSON when unparsable, INVALID_REQUEST if no object."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ShapeError(Failure.INVALID_JSON, "the request body is not valid JSON") from None
    if not isinstance(doc, dict):
        message = f"Invalid type. Expected: object, given: {type_name(doc)}."
        raise ShapeError(
            Failure.INVALID_REQUEST, message, [FieldError("", "invalid_type", message)]
        )
    return doc


def read(
    doc: dict[str, Any], limits: MessageLimits, original: OriginalFor | None = None
) -> list[Draft]:
    """The drafts of a decoded body, one per personalization; ShapeError listing every problem.

    Problems come in SendGrid's order: sender, personalizations, content, subject, the rest.
    `original(index, exclusive)` gives each draft's message its `original` as it is
    built (a copy made afterwards would cost more than the rest of the message).
    """
    check = MailSendChecker(limits)
    get = doc.get
    for name in _TYPES.keys() & doc.keys():
        check.typed(doc[name], name, _TYPES[name])
    template = isinstance(get("template_id"), str) and bool(get("template_id"))
    sender = check.sender(get("from"), "from", required=True)
    items = check.personalizations(get("personalizations"))
    personal = [
        check.personalization(item, f"personalizations.{i}") for i, item in enumerate(items)
    ]
    text, html, content_exclusive = check.content(get("content"), template)
    subject = check.string(get("subject"), "subject", header=True) or ""
    everywhere = bool(personal) and all(p.subject for p in personal)
    if not (subject or template or everywhere):
        check.fail("subject", "required", SUBJECT_REQUIRED)
    headers = check.sendgrid_headers(get("headers"), "headers")
    attachments = check.attachments(get("attachments"))
    tags = check.categories(get("categories"))
    metadata = check.custom_args(get("custom_args"), "custom_args")
    reply_to = check.reply_to(get("reply_to"), get("reply_to_list"))
    shared = (*exclusive_fields(doc), *content_exclusive)
    drafts = []
    for index, (item, own) in enumerate(zip(items, personal, strict=True)):
        merged_metadata = {**metadata, **own.metadata}
        at = f"personalizations.{index}"
        check.metadata_size(merged_metadata, f"{at}.custom_args" if own.metadata else "custom_args")
        own_exclusive = (f"personalizations.{k}" for k in _personalization_exclusive(item))
        exclusive = tuple(dict.fromkeys((*shared, *own_exclusive)))
        message = Message(
            sender=own.sender or sender or Address(""),  # no sender: an error is recorded
            to=own.to,
            cc=own.cc,
            bcc=own.bcc,
            reply_to=reply_to,
            subject=own.subject or subject,
            text=text,
            html=html,
            headers=_merge_headers(headers, own.headers),
            attachments=attachments,
            tags=tags,
            metadata=merged_metadata,
            original=None if original is None else original(index, exclusive),
        )
        check.size(message, at)
        drafts.append(Draft(message, exclusive))
    total = sum(len(p.to) + len(p.cc) + len(p.bcc) for p in personal)
    if total > MAX_RECIPIENTS:
        check.fail(
            "personalizations",
            "too_many_recipients",
            f"{total} recipients over all personalizations; SendGrid takes at most"
            f" {MAX_RECIPIENTS} per request",
        )
    if check.errors:
        raise ShapeError(Failure.INVALID_REQUEST, str(check.errors[0]), check.errors)
    return drafts


def exclusive_fields(doc: Mapping[str, Any]) -> list[str]:
    """The top-level fields of `doc` that only SendGrid can carry (see the module docstring)."""
    found = []
    for key, value in doc.items():
        if key in _GENERIC or not _present(value):
            continue
        droppable = _DROPPABLE.get(key)
        if droppable is None or not isinstance(value, dict):
            found.append(key)
            continue
        found.extend(
            f"{key}.{name}"
            for name, setting in value.items()
            if name not in droppable and _present(setting) and not _off(setting)
        )
    return found


def _personalization_exclusive(item: Mapping[str, Any]) -> list[str]:
    """substitutions, dynamic_template_data, send_at and whatever else SendGrid alone reads."""
    return [k for k, v in item.items() if k not in _PERSONALIZATION_GENERIC and _present(v)]


def _present(value: object) -> bool:
    return value is not None and value != "" and value != {} and value != []


def _off(setting: object) -> bool:
    return isinstance(setting, dict) and setting.get("enable") is False


def _merge_headers(top: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """Top-level headers with a personalization's own ones winning (names case-insensitive)."""
    if not own:
        return dict(top)
    replaced = {name.lower() for name in own}
    return {**{n: v for n, v in top.items() if n.lower() not in replaced}, **own}
