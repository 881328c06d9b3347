"""The ESP-shaped APIs in the OpenAPI document: their routes, auth slots and answers.

Their request bodies are each ESP's own, documented by the ESP; the document
says where each one lives, where its key goes, and what mailmux answers —
the ESP's own success and error shapes, which the ESP's SDK already reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailmux.vendors.inbound import Shape

Schema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _About:
    """What the document says of one shape."""

    esp: str
    security: Schema  # its OpenAPI security scheme
    auth: str  # where the key goes, in words
    body: tuple[str, ...]  # the request's media types
    success: tuple[int, str]  # status and what the body holds


_ABOUT: dict[str, _About] = {
    "sendgrid": _About(
        "SendGrid v3 Mail Send",
        {"type": "http", "scheme": "bearer"},
        "Authorization: Bearer <key>",
        ("application/json",),
        (202, "empty; X-Message-Id carries the first message's mailmux id"),
    ),
    "mailgun": _About(
        "Mailgun Messages",
        {"type": "http", "scheme": "basic"},
        "HTTP Basic, user 'api', password <key>",
        ("multipart/form-data", "application/x-www-form-urlencoded"),
        (200, '{"id": "<mailmux-id@domain>", "message": "Queued. Thank you."}'),
    ),
    "postmark": _About(
        "Postmark Email",
        {"type": "apiKey", "in": "header", "name": "X-Postmark-Server-Token"},
        "X-Postmark-Server-Token: <key>",
        ("application/json",),
        (200, '{"MessageID", "ErrorCode": 0, ...}; a batch answers one such object per item'),
    ),
    "sparkpost": _About(
        "SparkPost Transmissions",
        {"type": "apiKey", "in": "header", "name": "Authorization"},
        "Authorization: <key>",
        ("application/json",),
        (200, '{"results": {"id", "total_accepted_recipients", "total_rejected_recipients"}}'),
    ),
    "ses": _About(
        "Amazon SES v2 SendEmail",
        {"type": "apiKey", "in": "header", "name": "Authorization"},
        "AWS SigV4: access key id = client name, secret access key = its key",
        ("application/json",),
        (200, '{"MessageId"}'),
    ),
    "resend": _About(
        "Resend Emails",
        {"type": "http", "scheme": "bearer"},
        "Authorization: Bearer <key>",
        ("application/json",),
        (200, '{"id"}; a batch answers {"data": [{"id"}, ...]}'),
    ),
    "mailjet": _About(
        "Mailjet Send API v3.1",
        {"type": "http", "scheme": "basic"},
        "HTTP Basic, user <client name>, password <key>",
        ("application/json",),
        (200, '{"Messages": [{"Status": "success", "To": [...]}, ...]}, one per message'),
    ),
    "brevo": _About(
        "Brevo transactional email",
        {"type": "apiKey", "in": "header", "name": "api-key"},
        "api-key: <key>",
        ("application/json",),
        (201, '{"messageId"}, or {"messageIds"} for messageVersions'),
    ),
}

_SHAPED = (
    "Served for SDKs of this ESP: point the SDK's base URL at mailmux. The body is the "
    "ESP's own; mailmux routes each message it holds like any other. When a vendor of "
    "this same ESP sends it, the request goes out unchanged (only the credentials are "
    "the vendor's) and its answer comes back as the ESP gave it; otherwise it is "
    "translated, and a request using fields only this ESP has waits for a vendor of it. "
    "Headers X-Mailmux-Class, X-Mailmux-Deadline and Idempotency-Key work here too; "
    "X-Mailmux-Message-Id in the answer lists the message ids."
)


def shape_security_schemes(shapes: Sequence[Shape]) -> Schema:
    return {f"{shape.kind}Key": _about(shape.kind).security for shape in shapes}


def _about(kind: str) -> _About:
    """What to say of a shape; one without its own words gets general ones."""
    return _ABOUT.get(kind) or _About(
        kind,
        {"type": "apiKey", "in": "header", "name": "Authorization"},
        "in the ESP's own auth slot",
        ("application/json",),
        (200, "the ESP's own success answer"),
    )


def shape_paths(shapes: Sequence[Shape]) -> Schema:
    """A path item per endpoint of each shape that is on."""
    paths: Schema = {}
    ids: set[str] = set()
    for shape in shapes:
        about = _about(shape.kind)
        for endpoint in shape.endpoints:
            status, success = about.success
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _path_parameters(endpoint.path)
            ]
            operation_id = f"{shape.kind}_{endpoint.name}".replace(".", "_")
            while operation_id in ids:  # one endpoint at two paths (a trailing slash, ...)
                operation_id += "_"
            ids.add(operation_id)
            operation: Schema = {
                "operationId": operation_id,
                "tags": ["esp-shaped"],
                "summary": f"{about.esp}: {endpoint.method} {endpoint.path}",
                "description": f"{_SHAPED} Key: {about.auth}.",
                "security": [{f"{shape.kind}Key": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        media: {"schema": {"description": f"{about.esp} request"}}
                        for media in about.body
                    },
                },
                "responses": {
                    str(status): {"description": f"accepted (sent or spooled): {success}"},
                    "4XX": {"description": f"refused, in {about.esp}'s own error shape"},
                    "503": {
                        "description": "not accepted: no vendor took it and it could not "
                        "be spooled (in the ESP's error shape)"
                    },
                },
            }
            if parameters:
                operation["parameters"] = parameters
            paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return paths


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
