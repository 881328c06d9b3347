"""Schema pieces both OpenAPI documents use: the native API's and the admin API's.

Both APIs answer errors in one shape (`ingress/errors.py`) and report health
in one shape (`mailmux.status`), so both documents build those schemas here:
a change to either body is a change to one function, and both documents
follow it.
"""

from __future__ import annotations

from typing import Any

from mailmux.health import HealthState
from mailmux.spool.base import MessageState

Schema = dict[str, Any]

NULLABLE_STRING: Schema = {"type": ["string", "null"]}
NULLABLE_NUMBER: Schema = {"type": ["number", "null"]}
EPOCH: Schema = {"type": "number", "description": "epoch seconds"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def closed(properties: Schema) -> Schema:
    """An object with exactly these properties, all required."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(properties),
        "properties": properties,
    }


def answer(schema: Schema, description: str, headers: Schema | None = None) -> Schema:
    """A JSON answer: `schema` under application/json, with these headers if any."""
    out: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        out["headers"] = headers
    return out


def error(codes: list[str]) -> Schema:
    """The `error` object of `errors.error_response`, with `code` one of `codes`."""
    return {
        "type": "object",
        "required": ["code", "message"],
        "additionalProperties": False,
        "properties": {
            "code": {"enum": codes},
            "message": {"type": "string"},
            "details": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["path", "code", "message"],
                    "properties": {
                        "path": {
                            "type": "string",
                            "description": "like to[0], attachments[1].content or "
                            "headers.X-Foo; empty for the message as a whole",
                        },
                        "code": {"type": "string", "description": "snake_case"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    }


def error_body(*codes: str) -> Schema:
    """An error answer with nothing beside `error`: `{"error": {"code", "message", ...}}`."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["error"],
        "properties": {"error": error(list(codes))},
    }


def health() -> Schema:
    """The report of `status.build_status`: GET /v1/health, and the admin API's status."""
    count = {"type": "integer", "minimum": 0}
    vendor = closed(
        {
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "weight": {"type": "number"},
            "fallback": {"type": "boolean"},
            "drained": {"type": "boolean"},
            "state": {
                "enum": [state.name.lower() for state in HealthState],
                "description": "probing: half-open, one probe decides",
            },
            "requests": count,
            "success_rate": NULLABLE_NUMBER,
            "latency_p50_ms": NULLABLE_NUMBER,
            "latency_p90_ms": NULLABLE_NUMBER,
            "consecutive_failures": count,
            "ejections": count,
            "ejected_until": {**NULLABLE_NUMBER, "description": "epoch seconds"},
            "last_reason": {**NULLABLE_STRING, "description": "why it was last ejected"},
            "last_error": {
                **NULLABLE_STRING,
                "description": "its latest failure, as the ESP said it",
            },
        }
    )
    return closed(
        {
            "status": {
                "enum": ["ok", "degraded", "panic"],
                "description": "degraded: some vendor is ejected; panic: all are",
            },
            "vendors": {"type": "array", "items": vendor},
            "spool": closed({state.value: count for state in MessageState}),
        }
    )
