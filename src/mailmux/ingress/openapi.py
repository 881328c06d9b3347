"""The OpenAPI 3.1 description of the native API, served at /v1/openapi.json."""

from __future__ import annotations

from typing import Any

_ADDRESS: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "description": "'addr@example.com' or 'Name <addr@example.com>'"},
        {
            "type": "object",
            "properties": {"email": {"type": "string"}, "name": {"type": "string"}},
            "required": ["email"],
            "additionalProperties": False,
        },
    ]
}
_ADDRESSES: dict[str, Any] = {"oneOf": [_ADDRESS, {"type": "array", "items": _ADDRESS}]}
_ERROR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string"},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}
_RECEIPT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "state": {"enum": ["sent", "queued", "failed", "expired"]},
        "vendor": {"type": ["string", "null"]},
        "vendor_message_id": {"type": ["string", "null"]},
        "reason": {"type": "string"},
    },
    "required": ["id", "state", "vendor", "vendor_message_id"],
}
_MESSAGE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["from", "to"],
    "properties": {
        "from": _ADDRESS,
        "to": _ADDRESSES,
        "cc": _ADDRESSES,
        "bcc": _ADDRESSES,
        "reply_to": _ADDRESSES,
        "subject": {"type": "string"},
        "text": {"type": "string"},
        "html": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["filename", "content"],
                "properties": {
                    "filename": {"type": "string"},
                    "content": {"type": "string", "contentEncoding": "base64"},
                    "content_type": {"type": "string"},
                    "inline": {"type": "boolean"},
                    "content_id": {"type": "string"},
                },
            },
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "class": {"type": "string", "pattern": "^[a-z0-9_-]+$"},
        "deadline": {
            "oneOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number", "description": "seconds after acceptance"},
            ]
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mailmux native API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/messages": {
            "post": {
                "summary": "Send a message (answers after a vendor accepted it or it was spooled)",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _MESSAGE}},
                },
                "responses": {
                    "200": _json(_RECEIPT, "sent: a vendor accepted it"),
                    "202": _json(_RECEIPT, "queued: durably spooled, will be retried"),
                    "400": _json(_ERROR, "invalid request"),
                    "401": _json(_ERROR, "missing or unknown API key"),
                    "409": _json(_ERROR, "idempotency key in use"),
                    "413": _json(_ERROR, "request too large"),
                    "422": _json(_ERROR, "failed: a vendor rejected it permanently"),
                    "503": _json(_ERROR, "not accepted: no vendor took it and spooling failed"),
                    "504": _json(_ERROR, "expired: deadline passed before any vendor took it"),
                },
            }
        },
        "/v1/messages/{id}": {
            "get": {
                "summary": "A message's state, attempts and events",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json({"type": "object"}, "the message"),
                    "404": _json(_ERROR, "unknown id"),
                },
            }
        },
        "/v1/health": {
            "get": {
                "summary": "Vendors with weight, health state, success rate, latency; spool counts",
                "responses": {"200": _json({"type": "object"}, "status report")},
            }
        },
        "/v1/sandbox/{vendor}/messages": {
            "get": {
                "summary": "Messages a sandbox vendor accepted (most recent 1000)",
                "parameters": [
                    {"name": "vendor", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json({"type": "array"}, "accepted messages"),
                    "404": _json(_ERROR, "no such sandbox vendor"),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    },
}
