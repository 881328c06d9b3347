"""Amazon SES v2 SendEmail as the emulator serves it.

`POST /v2/email/outbound-emails`, rest-json, signed with SigV4 → 200
`{"MessageId": …}`; errors are `{"__type", "message"}` with the type repeated in
`x-amzn-ErrorType`, which is how botocore (and mailmux's adapter) read them.

Like moto, the emulator checks that a request is SigV4-signed for the `ses` signing
name (an `AWS4-HMAC-SHA256` Authorization header whose credential scope ends in
`/ses/aws4_request`, and an `X-Amz-Date`) without verifying the signature, so any key
pair works. The body is checked only for what SES certainly rejects, cheaply: exactly
one of Simple, Raw or Template content; a sender for Simple and Template (Raw may carry
it in its From header); a subject and a body for Simple; at least one recipient unless
Raw; at most 50 recipients; base64 where SES wants base64; SES's tag charset. The
request body is stored as received.
"""

from __future__ import annotations

import binascii
import re
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route

_JSON = "application/json"
_MAX_RECIPIENTS = 50
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: Error types SES answers these statuses with; other statuses get a type from their phrase.
_FAULT_TYPES = {
    400: "BadRequestException",
    403: "AccessDeniedException",
    404: "NotFoundException",
    429: "TooManyRequestsException",
    500: "InternalFailure",
    503: "ServiceUnavailable",
}


class SesShape:
    """The SES v2 shape; stateless, so one instance serves every request."""

    routes: Sequence[Route] = (("POST", "/v2/email/outbound-emails"),)

    async def receive(self, request: web.Request) -> Received | web.Response:
        authorization = request.headers.get("Authorization", "")
        refusal = _auth_refusal(authorization, request.headers)
        if refusal is not None:
            return refusal
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "BadRequestException", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "BadRequestException", "The request body must be a JSON object.")
        problem = _problem(body)
        if problem is not None:
            return _error(400, *problem)
        return Received(body=raw, headers=_recorded_headers(request.headers, authorization))

    def accepted(self, message_id: str) -> web.Response:
        return web.Response(
            body=orjson.dumps({"MessageId": message_id}),
            content_type=_JSON,
            headers={"x-amzn-RequestId": str(uuid.uuid4())},
        )

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        kind = _FAULT_TYPES.get(status) or _phrase(status).title().replace(" ", "") + "Exception"
        response = _error(status, kind, f"{_phrase(status)} (emulated fault)")
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response


def _auth_refusal(authorization: str, headers: Mapping[str, str]) -> web.Response | None:
    """SES's 403 for a request that is not SigV4-signed for `ses`; None when it is."""
    if not authorization:
        return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    scheme, _, rest = authorization.partition(" ")
    fields = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    if scheme != "AWS4-HMAC-SHA256" or not (
        fields.get("Credential") and fields.get("SignedHeaders") and fields.get("Signature")
    ):
        return _error(
            403,
            "IncompleteSignatureException",
            "Authorization must be 'AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…'.",
        )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return _error(
            403,
            "IncompleteSignatureException",
            "Credential must be <key id>/<date>/<region>/ses/aws4_request.",
        )
    if scope[3] != "ses":
        return _error(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to the correct service: 'ses', not {scope[3]!r}.",
        )
    if "X-Amz-Date" not in headers and "Date" not in headers:
        return _error(
            403, "IncompleteSignatureException", "A signed request needs an X-Amz-Date header."
        )
    return None


def _problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """The (error type, message) SES would answer 400 with; None when acceptable."""
    content = body.get("Content")
    kinds = [k for k in ("Simple", "Raw", "Template") if isinstance(content, dict) and k in content]
    if len(kinds) != 1:
        return "BadRequestException", "Content must hold exactly one of Simple, Raw or Template."
    (kind,) = kinds
    part = content[kind] if isinstance(content, dict) else None
    if not isinstance(part, dict):
        return "BadRequestException", f"Content.{kind} must be an object."
    if kind != "Raw" and not _text(body.get("FromEmailAddress")):
        return "BadRequestException", "FromEmailAddress is required."
    destination = body.get("Destination") or {}
    if not isinstance(destination, dict):
        return "BadRequestException", "Destination must be an object."
    lists = [destination.get(k) or [] for k in ("ToAddresses", "CcAddresses", "BccAddresses")]
    if not all(isinstance(v, list) and all(map(_text, v)) for v in lists):
        return "BadRequestException", "Destination addresses must be lists of strings."
    count = sum(map(len, lists))
    if count > _MAX_RECIPIENTS:
        return "MessageRejected", f"Recipient count exceeds {_MAX_RECIPIENTS}."
    if count == 0 and kind != "Raw":
        return "BadRequestException", "Destination needs at least one recipient."
    problem = _simple_problem(part) if kind == "Simple" else None
    if kind == "Raw" and not _base64(part.get("Data")):
        problem = "Content.Raw.Data must be the message, base64-encoded."
    if problem is None:
        problem = _tags_problem(body.get("EmailTags"))
    return None if problem is None else ("BadRequestException", problem)


def _simple_problem(simple: dict[str, Any]) -> str | None:
    subject, body = simple.get("Subject"), simple.get("Body")
    if not (isinstance(subject, dict) and isinstance(subject.get("Data"), str)):
        return "Content.Simple.Subject.Data is required."
    parts = [body.get(k) for k in ("Text", "Html")] if isinstance(body, dict) else []
    present = [p for p in parts if p is not None]
    if not present or not all(
        isinstance(p, dict) and isinstance(p.get("Data"), str) for p in present
    ):
        return "Content.Simple.Body needs Text or Html, each with Data."
    attachments = simple.get("Attachments") or []
    for index, attachment in enumerate(attachments if isinstance(attachments, list) else [None]):
        if not (
            isinstance(attachment, dict)
            and _text(attachment.get("FileName"))
            and _base64(attachment.get("RawContent"), empty_ok=True)
        ):
            return f"Content.Simple.Attachments[{index}] needs FileName and base64 RawContent."
    return None


def _tags_problem(tags: object) -> str | None:
    for tag in tags if isinstance(tags, list) else ([] if tags is None else [None]):
        name = tag.get("Name") if isinstance(tag, dict) else None
        value = tag.get("Value") if isinstance(tag, dict) else None
        if not (isinstance(name, str) and isinstance(value, str)):
            return "EmailTags must be a list of {Name, Value} strings."
        if not (_TAG.fullmatch(name) and _TAG.fullmatch(value)):
            return f"Invalid tag {name!r}: names and values take ASCII letters, digits, _ and -."
    return None


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _base64(value: object, *, empty_ok: bool = False) -> bool:
    if not isinstance(value, str) or not (value or empty_ok):
        return False
    try:
        binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error:
        return False
    return True


def _recorded_headers(headers: Mapping[str, str], authorization: str) -> dict[str, str]:
    """What a test wants to see of the request headers: the credential scope, not the
    signature; the access key by its tail only."""
    credential = authorization.partition("Credential=")[2].partition(",")[0]
    key, _, scope = credential.partition("/")
    shown = f"…{key[-4:]}" if len(key) > 8 else "…"
    recorded = {"authorization": f"AWS4-HMAC-SHA256 Credential={shown}/{scope}"}
    for name in ("content-type", "x-amz-date", "user-agent"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    if "x-amz-security-token" in headers:
        recorded["x-amz-security-token"] = "…"
    return recorded


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"__type": kind, "message": message}),
        content_type=_JSON,
        headers={"x-amzn-ErrorType": kind, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
