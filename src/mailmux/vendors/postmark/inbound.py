"""Postmark's send API as mailmux serves it: `POST /email` and `/email/batch` in, Messages out.

The fields are Postmark's: `From`; `To`, `Cc`, `Bcc` as comma-separated
strings (commas inside a quoted name do not split); `ReplyTo` the same, or an
array (postmarker sends a list as one); `Subject`, `TextBody`, `HtmlBody`;
`Headers [{Name, Value}]`; one `Tag`; `Metadata {}`; `Attachments [{Name,
Content, ContentType, ContentID}]`, where a ContentID (`cid:` prefix
dropped) makes the part inline. Explicit `null`s, `[]` and `"TrackLinks":
"None"` are what postmarker sends for unset arguments: they mean absent.

`TrackOpens` and `TrackLinks` are dropped when translating (tracking is the
sending ESP's business). Exclusive, so a message carrying one goes to
Postmark vendors only: a `MessageStream` other than `outbound` (another
stream has its own suppressions and unsubscribe handling), any field this
module does not know, and everything of the template endpoints
(`/email/withTemplate`, `/email/batchWithTemplates`: Postmark renders
subject and body from a template no other ESP has), which are therefore
pass-through only.

A batch is one Message per item, each with the item alone as its
`original.body`, so a Postmark vendor sends it through `/email` (or
`/email/withTemplate`). An invalid item refuses the whole batch (Postmark
itself would answer it per item): nothing is sent for a request a caller
must fix anyway. A batch is answered per item, as Postmark does; a single
send with a rejected message gets Postmark's 422.

Refused as Postmark refuses (422, see `replies` for the codes): a body not
typed as JSON, not JSON, not a message object (or not an array for a
batch), more than 500 batch messages, no sender, no recipient, more than 50
recipients, no body; plus the rules every ingress shares (`JsonChecker`:
addresses, line breaks in the subject, header names and values and display
names, reserved header names, sizes). A header name given twice is refused:
a Message holds one value per header.

mailmux's answer carries no `To` (the request body is gone by then):
Postmark itself leaves it out of the answer to a message without To, and
postmarker never reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, NoReturn, cast

import orjson

from mailmux.message import (
    FieldError,
    Message,
    MessageLimits,
    Original,
    parts_size,
)
from mailmux.native import JsonChecker
from mailmux.vendors.inbound import (
    Credential,
    Endpoint,
    Failure,
    ItemResult,
    Reply,
    ShapeError,
    ShapeRequest,
)
from mailmux.vendors.postmark import fields, replies

KIND = "postmark"
TOKEN_HEADER = "X-Postmark-Server-Token"
MAX_RECIPIENTS = 50
MAX_BATCH = 500
#: Which endpoint a message of a batch endpoint is sent through on its own.
SINGLE_OF = {"batch": "email", "batch_template": "template"}
#: Postmark's endpoint paths by name; postmarker adds a "/" to the template ones.
PATHS = {
    "email": "/email",
    "batch": "/email/batch",
    "template": "/email/withTemplate",
    "batch_template": "/email/batchWithTemplates",
}
ENDPOINTS = (
    Endpoint("email", "POST", PATHS["email"]),
    Endpoint("batch", "POST", PATHS["batch"]),
    Endpoint("template", "POST", PATHS["template"]),
    Endpoint("template", "POST", PATHS["template"] + "/"),
    Endpoint("batch_template", "POST", PATHS["batch_template"]),
    Endpoint("batch_template", "POST", PATHS["batch_template"] + "/"),
)
_JSON_TYPES = frozenset({"application/json", "text/json", "text/x-json"})
#: Checked for type up front; Subject and Tag are checked as header text on their own.
_STRINGS = ("From", "To", "Cc", "Bcc", "TextBody", "HtmlBody")
_MODELLED = frozenset(
    {*_STRINGS, "Subject", "Tag", "ReplyTo", "Headers", "Attachments", "Metadata"}
    | {"TrackOpens", "TrackLinks", "MessageStream"}
)
_TEMPLATE_FIELDS = frozenset({"TemplateId", "TemplateAlias", "TemplateModel", "InlineCss"})


class PostmarkInbound:
    """Postmark's shape; stateless, so one instance serves every request."""

    kind = KIND
    endpoints: Sequence[Endpoint] = ENDPOINTS

    def credential(self, request: ShapeRequest) -> Credential | None:
        token = request.headers.get(TOKEN_HEADER, "").strip()
        return Credential(token) if token else None

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        return [message for _, message in self.parse_items(request, limits=limits)]

    def parse_items(
        self, request: ShapeRequest, *, limits: MessageLimits
    ) -> list[tuple[dict[str, Any], Message]]:
        """Each message with the JSON object it came from (the emulator echoes its `To`)."""
        content_type = request.headers.get("Content-Type", "")
        items = _documents(request.endpoint, content_type, request.body)
        batch = request.endpoint in SINGLE_OF
        single = SINGLE_OF.get(request.endpoint, request.endpoint)
        template = single == "template"
        check = JsonChecker(limits)
        found: list[tuple[dict[str, Any], Message]] = []
        for index, item in enumerate(items):
            at = f"[{index}]." if batch else ""
            parsed = _message(check, item, at, template)
            if parsed is None:
                continue
            message, exclusive = parsed
            body = orjson.dumps(item) if batch else request.body
            original = Original(KIND, single, body, content_type, exclusive)
            found.append((item, replace(message, original=original)))
        if check.errors:
            raise ShapeError(Failure.INVALID_REQUEST, wording(check.errors), check.errors)
        return found

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        if request.endpoint in SINGLE_OF:
            return replies.batch_reply(results)
        (result,) = results
        return replies.single_reply(result)

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        return replies.failure_reply(failure, message, errors)


def wording(errors: Sequence[FieldError]) -> str:
    """Every problem in one `Message`, Postmark-style: `Invalid 'To': …`."""
    return "; ".join(f"Invalid '{e.path}': {e.message}" if e.path else e.message for e in errors)


def _documents(endpoint: str, content_type: str, body: bytes) -> list[dict[str, Any]]:
    """The request's message objects; ShapeError for what Postmark cannot read as such."""
    if content_type.partition(";")[0].strip().lower() not in _JSON_TYPES:
        _refuse(
            "json_required",
            "Content-Type and Accept headers must be set to application/json, text/json,"
            " or text/x-json.",
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ShapeError(Failure.INVALID_JSON, "The request body is not valid JSON.") from None
    if endpoint == "batch_template":
        document = document.get("Messages") if isinstance(document, dict) else None
    elif endpoint in ("email", "template"):
        document = [document] if isinstance(document, dict) else None
    if not (isinstance(document, list) and all(isinstance(item, dict) for item in document)):
        shape = "one message object" if endpoint in ("email", "template") else "a batch of them"
        _refuse(
            "incompatible_json",
            "Received valid, but incompatible JSON input:"
            f" the body must be a JSON object, {shape}.",
        )
    if not document:
        _refuse("required", "The batch holds no messages.")
    if len(document) > MAX_BATCH:
        _refuse(
            "too_many_messages",
            f"{len(document)} messages; a batch may hold at most {MAX_BATCH}.",
        )
    return cast(list[dict[str, Any]], document)


def _refuse(code: str, message: str) -> NoReturn:
    raise ShapeError(Failure.INVALID_REQUEST, message, [FieldError("", code, message)])


def _message(
    check: JsonChecker, item: Mapping[str, Any], at: str, template: bool
) -> tuple[Message, tuple[str, ...]] | None:
    """One Postmark message object as a Message, and its exclusive fields."""
    before = len(check.errors)
    for key in _STRINGS:
        check.string(item.get(key), at + key)
    sender = fields.sender(check, item.get("From"), at)
    to, cc, bcc = (fields.addresses(check, item.get(key), at + key) for key in ("To", "Cc", "Bcc"))
    count = len(to) + len(cc) + len(bcc)
    if count == 0 and all(isinstance(item.get(k) or "", str) for k in ("To", "Cc", "Bcc")):
        check.fail(at + "To", "required", "Zero recipients specified")
    if count > MAX_RECIPIENTS:
        check.fail(
            at + "To",
            "too_many_recipients",
            f"{count} recipients; a message may have at most {MAX_RECIPIENTS}.",
        )
    check.recipients(count)
    reply_to = fields.reply_to(check, item.get("ReplyTo"), at)
    subject = check.string(item.get("Subject"), at + "Subject", header=True) or ""
    text = fields.text(item.get("TextBody"))
    html = fields.text(item.get("HtmlBody"))
    if not template and text is None and html is None:
        check.fail(
            at + "TextBody", "required", "Provide either a TextBody or an HtmlBody, or both."
        )
    tag = check.string(item.get("Tag"), at + "Tag", header=True)
    headers = fields.headers(check, item.get("Headers"), at)
    attachments = fields.attachments(check, item.get("Attachments"), at)
    metadata = fields.metadata(check, item.get("Metadata"), at)
    fields.tracking(check, item, at)
    exclusive = _exclusive(check, item, at, template)
    shown = (*((sender,) if sender else ()), *to, *cc, *reply_to)
    size = parts_size(shown, subject, text, html, headers, attachments)
    if size > check.limits.max_message_bytes:
        check.fail(
            at.rstrip("."),
            "too_large",
            f"the message is {size} bytes; the limit is {check.limits.max_message_bytes}",
        )
    if len(check.errors) > before or sender is None:
        return None
    tags = () if not tag else (tag,)
    message = Message(
        sender,
        to,
        cc,
        bcc,
        reply_to,
        subject,
        text,
        html,
        headers,
        tuple(attachments),
        tags,
        metadata,
    )
    return message, exclusive


def _exclusive(
    check: JsonChecker, item: Mapping[str, Any], at: str, template: bool
) -> tuple[str, ...]:
    """The fields of `item` no other ESP can carry (None counts as absent)."""
    stream = item.get("MessageStream")
    if stream is not None and not isinstance(stream, str):
        check.wrong_type(at + "MessageStream", stream, "a string")
    known = _MODELLED | _TEMPLATE_FIELDS if template else _MODELLED
    exclusive = [k for k, v in item.items() if v is not None and k not in known]
    if stream not in (None, "outbound"):
        exclusive.append("MessageStream")
    if template:
        _template_fields(check, item, at)
        exclusive.extend(k for k in sorted(_TEMPLATE_FIELDS) if item.get(k) is not None)
    return tuple(exclusive)


def _template_fields(check: JsonChecker, item: Mapping[str, Any], at: str) -> None:
    template_id, alias = item.get("TemplateId"), item.get("TemplateAlias")
    if template_id is None and alias is None:
        check.fail(at + "TemplateId", "required", "a TemplateId or a TemplateAlias is required")
    if template_id is not None and (
        isinstance(template_id, bool) or not isinstance(template_id, int)
    ):
        check.wrong_type(at + "TemplateId", template_id, "a number")
    if alias is not None and not isinstance(alias, str):
        check.wrong_type(at + "TemplateAlias", alias, "a string")
    model = item.get("TemplateModel")
    if model is not None and not isinstance(model, dict):
        check.wrong_type(at + "TemplateModel", model, "an object")
