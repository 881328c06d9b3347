"""Brevo's `POST /v3/smtp/email` as mailmux serves it: the request in, Messages out.

A service using brevo-python points it at mailmux (`base_url=<mailmux>/v3`)
and keeps its `api-key` header, which holds a mailmux client key. Each field
is read in `fields`; answers are in `replies` (statuses chosen for how the
SDK raises and retries).

Reading a request:

- brevo-python sends `null` for an argument given as None, so a null field is
  an absent one, at every level.
- `sender{email,name}`, `to`/`cc`/`bcc` arrays of `{email,name}`, `replyTo`,
  `subject`, `htmlContent`, `textContent`, `tags` and `attachment[{content,
  name}]` are carried. An attachment's content type comes from its extension,
  which must be one Brevo accepts. Brevo has no inline (Content-ID) images,
  so neither does this shape.
- `headers{}` become the message's custom headers, except three of Brevo's
  own: `X-Mailin-custom` is Brevo's metadata (a JSON object becomes the
  metadata; any other string is kept whole under the name `X-Mailin-custom`),
  `idempotencyKey` is Brevo's request key (not a mail header: a Brevo vendor
  gets it in the body it is handed and Brevo dedupes on it; mailmux itself
  dedupes on the `Idempotency-Key` request header, which brevo-python sends
  through `request_options={"additional_headers": ...}`) and
  `X-Sib-Sandbox` is exclusive (below). A standard header Brevo is given
  (`Content-Type`, `Message-ID`, ...) is exclusive too: mailmux writes those
  itself for other ESPs.
- `messageVersions`: one Message per version, in order. A version's `to`
  replaces the top-level one (which Brevo ignores then); its cc, bcc,
  replyTo, subject and contents replace the top-level ones where given. Each
  Message's original is the request with that one version, so a Brevo vendor
  sends exactly it; a batch's `headers.idempotencyKey` is replaced there by a
  key derived from it and the version's index, or Brevo would refuse every
  version after the first as a duplicate.

Exclusive (only a Brevo vendor may carry the message; `Original.exclusive`
names them): `templateId`, `params` (also in a version), `scheduledAt`,
`batchId`, a sender chosen by `id`, an attachment by `url` (fetching a URL
for another ESP would be an SSRF hole), the `X-Sib-Sandbox` and `sender.ip`
headers, standard headers, and any field this module does not know (taken to
be Brevo's, not dropped). A message whose sender or contents a template gives
has an empty sender and body: no other ESP ever sees it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from mailmux.message import (
    Address,
    FieldError,
    Message,
    MessageLimits,
    Original,
    parts_size,
)
from mailmux.vendors.brevo.fields import FieldReader, Parts, given, present
from mailmux.vendors.brevo.outbound import IDEMPOTENCY_HEADER
from mailmux.vendors.brevo.replies import INVALID, failure_reply, success_reply
from mailmux.vendors.inbound import (
    Credential,
    Endpoint,
    Failure,
    ItemResult,
    Reply,
    ShapeError,
    ShapeRequest,
)

ENDPOINT = "email"
ENDPOINTS = (Endpoint(ENDPOINT, "POST", "/v3/smtp/email"),)
#: The domain of the Message-IDs mailmux answers with: `<{mailmux id}@mailmux>`.
ID_DOMAIN = "mailmux"

_TOP_FIELDS = frozenset(
    {"sender", "to", "cc", "bcc", "replyTo", "subject", "htmlContent", "textContent"}
    | {"headers", "attachment", "tags", "templateId", "params", "scheduledAt", "batchId"}
    | {"messageVersions"}
)
#: Top-level and version fields that only Brevo can carry.
_EXCLUSIVE_FIELDS = ("templateId", "params", "scheduledAt", "batchId")
#: Namespace of the UUIDv5 that gives each version of a batch its own idempotency key.
_VERSION_KEYS = uuid.UUID("0b7f2a55-6c1d-4e0a-9a8e-3f5d2c6b1e94")
_NO_SENDER = Address("")
_BAD_JSON = "Input must be a valid JSON object"


class BrevoInbound:
    """The Brevo shape (stateless): `id_domain` is where reply ids say they come from."""

    kind = "brevo"
    endpoints: Sequence[Endpoint] = ENDPOINTS

    def __init__(self, id_domain: str = ID_DOMAIN) -> None:
        self.id_domain = id_domain

    def credential(self, request: ShapeRequest) -> Credential | None:
        key = request.headers.get("api-key", "").strip()
        return Credential(key) if key else None

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        content_type = request.headers.get("Content-Type", "application/json")
        return messages(decode(request.body), request.body, content_type, limits)

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        return success_reply(results, versions=None, id_domain=self.id_domain)

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        return failure_reply(failure, message, errors)


def decode(body: bytes) -> dict[str, Any]:
    """The request's JSON object; ShapeError INVALID_JSON when it is not one."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ShapeError(Failure.INVALID_JSON, _BAD_JSON) from None
    if not isinstance(document, dict):
        raise ShapeError(Failure.INVALID_JSON, _BAD_JSON)
    return document


def messages(
    document: Mapping[str, Any], body: bytes, content_type: str, limits: MessageLimits
) -> list[Message]:
    """One Message per email the request asks for (see the module docstring)."""
    reader = FieldReader(limits)
    top = present(document)
    reader.unknown(top, _TOP_FIELDS, "")
    reader.exclusive.update(name for name in _EXCLUSIVE_FIELDS if given(top.get(name)))
    templated = given(top.get("templateId"))
    sender = reader.sender(top.get("sender"), required=not templated)
    headers, metadata = reader.headers(top.get("headers"))
    attachments = reader.attachments(top.get("attachment"))
    tags = reader.tags(top.get("tags"))
    shared = reader.parts(top, "")  # top-level `to` too: ignored with versions, still checked
    versions = top.get("messageVersions")
    if versions is None:
        plans: list[tuple[Parts, bool, frozenset[str]]] = [(shared, templated, frozenset())]
    elif isinstance(versions, list) and versions and all(isinstance(v, dict) for v in versions):
        plans = [reader.version(shared, v, i, templated) for i, v in enumerate(versions)]
    else:
        reader.fail(INVALID, "messageVersions must be a non-empty array of objects")
        plans = []
    found: list[Message] = []
    for index, (parts, version_templated, version_exclusive) in enumerate(plans):
        where = "" if versions is None else f" in messageVersions[{index}]"
        asked = top if versions is None else present(versions[index])
        if not asked.get("to"):
            reader.fail("required", f"to is missing{where}")
        if not version_templated:
            if not parts.subject:
                reader.fail("required", f"subject is missing{where}")
            if not (parts.html or parts.text):
                reader.fail("required", f"htmlContent or textContent is missing{where}")
        reader.check.recipients(len(parts.to) + len(parts.cc) + len(parts.bcc))
        shown = (*((sender,) if sender else ()), *parts.to, *parts.cc, *parts.reply_to)
        size = parts_size(shown, parts.subject, parts.text, parts.html, headers, attachments)
        if size > limits.max_message_bytes:
            limit = limits.max_message_bytes
            reader.check.fail("", "too_large", f"the message is {size} bytes; the limit is {limit}")
        if reader.check.errors:
            continue
        exclusive = tuple(sorted(reader.exclusive | version_exclusive))
        item_body = body if len(plans) == 1 else _narrowed(document, index)
        original = Original("brevo", ENDPOINT, item_body, content_type, exclusive)
        found.append(
            Message(
                sender or _NO_SENDER,
                parts.to,
                parts.cc,
                parts.bcc,
                parts.reply_to,
                parts.subject,
                parts.text or None,
                parts.html or None,
                headers,
                attachments,
                tags,
                metadata,
                original=original,
            )
        )
    if reader.check.errors:
        errors = reader.check.errors
        raise ShapeError(Failure.INVALID_REQUEST, str(errors[0]), errors)
    return found


def _narrowed(document: Mapping[str, Any], index: int) -> bytes:
    """The request with only version `index`, under that version's own idempotency key."""
    narrowed = dict(document)
    narrowed["messageVersions"] = [document["messageVersions"][index]]
    headers = narrowed.get("headers")
    if isinstance(headers, dict):
        for name, value in headers.items():
            if name.lower() == IDEMPOTENCY_HEADER.lower() and isinstance(value, str):
                key = str(uuid.uuid5(_VERSION_KEYS, f"{value}#{index}"))
                narrowed["headers"] = {**headers, name: key}
    return orjson.dumps(narrowed)
