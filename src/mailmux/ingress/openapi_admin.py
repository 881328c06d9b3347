"""The OpenAPI 3.1 description of the admin API, served at /admin/v1/openapi.json.

A document of its own, apart from /v1/openapi.json: the admin API has its
own keys (`admin_keys`), its own callers (operators and `mailmux` commands,
not services sending mail) and may be left unexposed where the native API
is. The schemas follow `ingress/admin.py` and the bodies it builds
(`Override.to_json`, `ReloadResult.to_json`, `status.build_status`,
`Reloader.state`); errors are the native API's (`ingress/errors.py`).

The override request schema is what mailmux accepts, except for what JSON
Schema cannot know: the configured vendors (an unknown one is refused with
422) and whether a change leaves any vendor a weight above 0 (else 422).
Unknown fields are ignored, as are fields another kind uses (`vendor` and
`hard` with weights, `weights` with drain or pin).
"""

from __future__ import annotations

from mailmux.control import MAX_REASON
from mailmux.ingress.openapi_common import (
    EPOCH,
    NULLABLE_NUMBER,
    NULLABLE_STRING,
    Schema,
    answer,
    closed,
    error,
    error_body,
    health,
    ref,
)
from mailmux.overrides import OverrideKind

#: What the audit records as `action`: a kind set, a vendor restored, overrides expired.
AUDIT_ACTIONS = [*(kind.value for kind in OverrideKind), "restore", "expire"]
#: What started a reload (`Reloader.reload`'s trigger).
RELOAD_TRIGGERS = ["signal", "api", "watch"]

# A duration above 0 as `parse_duration` reads it: digits (a fraction allowed), then s, m,
# h or d (seconds when none), blanks around. At least one digit is not 0.
_POSITIVE = r"([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)"
_DURATION = f"^[ \\t]*{_POSITIVE}[ \\t]*[smhd]?[ \\t]*$"

_DESCRIPTION = (
    "The operator's levers: status, vendors, overrides (weights, drain, pin), the audit, "
    "config reload. Errors are JSON: "
    '{"error": {"code", "message"}}.\n\n'
    "Authentication: with `admin_keys` configured, every route but this document needs "
    "'Authorization: Bearer <admin key>'; no key or an unknown one is answered 401 (with "
    "WWW-Authenticate: Bearer), and a client key (`api_keys`, `clients`) 403 forbidden: a "
    "service that can send mail cannot move traffic. The audit names the caller by the "
    "key's place in the config (`admin_keys[0]`), never by the key. Without `admin_keys` "
    "the admin API is open, with no key, only when `listen` is a loopback address (the "
    "caller is then `anonymous`); on any other address every route but this document "
    "answers 403 forbidden until admin keys are configured."
)


def _override() -> Schema:
    """One override in force, as `Override.to_json` writes it."""
    return closed(
        {
            "kind": {"enum": [kind.value for kind in OverrideKind]},
            "vendor": {"type": "string"},
            "weight": {**NULLABLE_NUMBER, "description": "the weight set; weights only"},
            "hard": {"type": "boolean", "description": "drain only: not even a fallback"},
            "expires_at": {**NULLABLE_NUMBER, "description": "epoch seconds; null: for good"},
            "reason": {"type": "string"},
            "created_at": EPOCH,
            "created_by": {
                "type": "string",
                "description": "the caller: admin_keys[N], anonymous or mailmux",
            },
        }
    )


def _vendors() -> Schema:
    """Each vendor's configured and effective weight, its overrides and health."""
    vendor = closed(
        {
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "configured_weight": {"type": "number", "description": "the config file's"},
            "weight": {"type": "number", "description": "with the overrides in force"},
            "share": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "its share of first picks while every vendor is up",
            },
            "fallback": {"type": "boolean"},
            "drained": {"type": "boolean"},
            "overrides": {"type": "array", "items": ref("Override")},
            "state": health()["properties"]["vendors"]["items"]["properties"]["state"],
            "ejected_until": {**NULLABLE_NUMBER, "description": "epoch seconds"},
            "last_reason": {**NULLABLE_STRING, "description": "why it was last ejected"},
            "last_error": {**NULLABLE_STRING, "description": "its latest failure"},
        }
    )
    return closed({"vendors": {"type": "array", "items": vendor}, "config": ref("ConfigState")})


def _config_state() -> Schema:
    """`Reloader.state`: the file the node runs from, when it was loaded, the last refusal."""
    refusal = closed(
        {
            "at": EPOCH,
            "path": NULLABLE_STRING,
            "trigger": {"enum": RELOAD_TRIGGERS},
            "errors": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        }
    )
    return closed(
        {
            "path": {**NULLABLE_STRING, "description": "null: the embedded default config"},
            "loaded_at": EPOCH,
            "reload_error": {
                "anyOf": [refusal, {"type": "null"}],
                "description": "the latest refused reload, until one succeeds",
            },
        }
    )


def _status() -> Schema:
    """GET /v1/health's report with the config file's state."""
    report = health()
    return {
        **report,
        "required": [*report["required"], "config"],
        "properties": {**report["properties"], "config": ref("ConfigState")},
    }


def _audit_event() -> Schema:
    return closed(
        {
            "id": {"type": "integer", "description": "in the order events were recorded"},
            "at": EPOCH,
            "who": {
                "type": "string",
                "description": "admin_keys[N], anonymous (loopback, no admin keys) or mailmux "
                "(an expiry)",
            },
            "action": {"enum": AUDIT_ACTIONS},
            "reason": {"type": "string"},
            "what": {
                "type": "array",
                "description": "the overrides set; for restore, the vendor restored; for "
                "expire, nothing",
                "items": {"anyOf": [ref("Override"), closed({"vendor": {"type": "string"}})]},
            },
            "previous": {
                "type": "array",
                "items": ref("Override"),
                "description": "the overrides it replaced, removed or that expired",
            },
        }
    )


def _change() -> Schema:
    """`ConfigChange.to_json`: vendor names, in the new file's order."""
    names = {"type": "array", "items": {"type": "string"}}
    return closed(
        {
            "added": names,
            "removed": names,
            "replaced": {**names, "description": "connection settings changed: a new client"},
            "retuned": {**names, "description": "weight, fallback or the like changed"},
            "restart_needed": {
                **names,
                "description": "settings read at start only: changed in the file, not applied",
            },
            "other": {"type": "boolean", "description": "another live setting changed"},
        }
    )


def _reloaded() -> Schema:
    return closed(
        {
            "result": {"const": "ok"},
            "path": {"type": "string"},
            "changes": ref("ConfigChange"),
            "summary": {"type": "string", "description": "one line, as logged"},
        }
    )


def _reload_refused() -> Schema:
    return closed(
        {
            "result": {"const": "invalid"},
            "path": {**NULLABLE_STRING, "description": "null: no file (the embedded default)"},
            "errors": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "error": error(["invalid_config"]),
        }
    )


def _route_request() -> Schema:
    """The message to explain: its envelope and what rules match on, no body."""
    addresses = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    return {
        "type": "object",
        "required": ["from", "to"],
        "properties": {
            "from": {"type": "string", "description": "the sender's address"},
            "to": addresses,
            "cc": addresses,
            "class": {"type": "string", "description": "the class the message would ask for"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "client": {"type": "string", "description": "the client (ingress key) it comes from"},
        },
    }


def _explanation() -> Schema:
    """`explain.explain`: the resolved class, the rules that decided, each vendor's part."""
    rule = {"anyOf": [{"type": "object"}, {"type": "null"}]}
    vendor = closed(
        {
            "name": {"type": "string"},
            "configured_weight": {"type": "number"},
            "weight": {
                "type": "number",
                "description": "after class, rule, overrides and min-share warm-up",
            },
            "share": {"type": "number", "minimum": 0, "maximum": 1},
            "fallback": {"type": "boolean"},
            "drained": {"type": "boolean"},
            "state": {"enum": ["available", "probe", "ejected"]},
            "in_plan": {"type": "boolean"},
            "at_limit": {
                "type": "boolean",
                "description": "at its rate limit, quota or an ESP's retry-after now: not planned",
            },
            "over_cap": {
                "type": "boolean",
                "description": "past today's warm-up cap: planned last",
            },
        }
    )
    return closed(
        {
            "class": {"type": "object", "description": "the traffic class and its settings"},
            "requested_class": {"type": "string"},
            "class_rule": {**rule, "description": "the rule that set the class, if any"},
            "route_rule": {**rule, "description": "the rule that chose vendors or weights"},
            "vendors": {"type": "array", "items": vendor},
            "left_out": {"type": "array", "items": {"type": "string"}},
            "order": {"type": "array", "items": {"type": "string"}},
            "panic": {"type": "boolean"},
        }
    )


def _warmup() -> Schema:
    """Today's UTC day and each warm-up schedule on it (`warmup.warmup_status`)."""
    count = {"type": "integer", "minimum": 0}
    schedule = closed(
        {
            "vendor": {"type": "string"},
            "start": {**NULLABLE_STRING, "description": "the ramp's day 1 (a date); null: none"},
            "day": {
                "anyOf": [{"type": "integer"}, {"type": "null"}],
                "description": "the ramp's day today (1 is start; 0 or below: before it)",
            },
            "ramp_days": count,
            "cap": {
                "anyOf": [count, {"type": "null"}],
                "description": "today's cap; null: none",
            },
            "sent": count,
            "in_flight": count,
            "days_left": count,
            "min_share": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "share": {
                "anyOf": [{"type": "number"}, {"type": "null"}],
                "description": "its share of today's messages; null: none sent today",
            },
        }
    )
    return closed(
        {
            "day": {"type": "string", "description": "the UTC day, YYYY-MM-DD"},
            "schedules": {"type": "array", "items": schedule},
        }
    )


def _override_request() -> Schema:
    """The body of POST /admin/v1/overrides (`control.build_overrides`), one kind each."""
    common: Schema = {
        "for": {
            "description": "how long it holds: seconds, or a string like '90s', '15m', '2h', "
            "'1d' (no unit: seconds); above 0 and finite. Absent or null: until restored",
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": _DURATION},
                {"type": "null"},
            ],
        },
        "reason": {
            "anyOf": [{"type": "string", "maxLength": MAX_REASON}, {"type": "null"}],
            "description": "kept in the audit",
        },
    }
    vendor = {
        "type": "string",
        "minLength": 1,
        "description": "a configured vendor (else 422)",
    }

    def kind(name: OverrideKind, properties: Schema, required: list[str]) -> Schema:
        return {
            "type": "object",
            "required": ["kind", *required],
            "properties": {"kind": {"const": name.value}, **properties, **common},
            "additionalProperties": False,
        }

    return {
        "description": "one change; it replaces the override of the same kind on the same "
        "vendor (any pin replaces the pin). A field its kind does not name is refused "
        "(400 invalid_override)",
        "oneOf": [
            kind(
                OverrideKind.WEIGHTS,
                {
                    "weights": {
                        "type": "object",
                        "minProperties": 1,
                        "description": "vendor → weight: one override per vendor named, "
                        "each a configured vendor (else 422)",
                        "additionalProperties": {"type": "number", "minimum": 0},
                    }
                },
                ["weights"],
            ),
            kind(
                OverrideKind.DRAIN,
                {
                    "vendor": vendor,
                    "hard": {
                        "type": "boolean",
                        "description": "true: not even a last-resort fallback",
                    },
                },
                ["vendor"],
            ),
            kind(
                OverrideKind.PIN,
                {
                    "vendor": vendor,
                    "hard": {"const": False, "description": "hard applies to drain only"},
                },
                ["vendor"],
            ),
        ],
    }


_EXAMPLES: Schema = {
    "weights": {"value": {"kind": "weights", "weights": {"a": 0, "b": 100}, "reason": "a slow"}},
    "drain": {"value": {"kind": "drain", "vendor": "a", "hard": False, "for": "15m"}},
    "pin": {"value": {"kind": "pin", "vendor": "b", "for": 600}},
}
_VENDORS = answer(ref("Vendors"), "every vendor, with the overrides now in force")
_REFUSED = answer(
    error_body("override_refused"),
    "refused, nothing changed: a body the schema does not allow, an unknown vendor, or no "
    "vendor would be left with a weight above 0",
)
#: What every guarded route may answer besides its own.
_GUARD = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
}


def admin_openapi_document() -> Schema:
    """The document; it depends on no setting, so one copy serves every node."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "mailmux admin API", "version": "1", "description": _DESCRIPTION},
        "components": {
            "securitySchemes": {
                "adminKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "one of admin_keys (none needed on loopback without them)",
                }
            },
            "schemas": {
                "Status": _status(),
                "ConfigState": _config_state(),
                "Override": _override(),
                "Vendors": _vendors(),
                "OverrideRequest": _override_request(),
                "AuditEvent": _audit_event(),
                "ConfigChange": _change(),
                "Reloaded": _reloaded(),
                "ReloadRefused": _reload_refused(),
            },
            "responses": {
                "Unauthorized": answer(
                    error_body("unauthorized"),
                    "admin_keys are configured and no key, or an unknown one, was sent",
                    {"WWW-Authenticate": {"required": True, "schema": {"const": "Bearer"}}},
                ),
                "Forbidden": answer(
                    error_body("forbidden"),
                    "a client key was sent, not an admin key; or no admin_keys are "
                    "configured and listen is not a loopback address",
                ),
            },
        },
        "security": [{"adminKey": []}],
        "paths": {
            "/admin/v1/status": {
                "get": {
                    "operationId": "getStatus",
                    "summary": "GET /v1/health's report, with the config file's state",
                    "responses": {"200": answer(ref("Status"), "the status report"), **_GUARD},
                }
            },
            "/admin/v1/vendors": {
                "get": {
                    "operationId": "getVendors",
                    "summary": "Each vendor: configured and effective weight, share, "
                    "overrides, health",
                    "responses": {"200": _VENDORS, **_GUARD},
                }
            },
            "/admin/v1/overrides": {
                "get": {
                    "operationId": "getOverrides",
                    "summary": "The overrides in force",
                    "responses": {
                        "200": answer(
                            closed({"overrides": {"type": "array", "items": ref("Override")}}),
                            "the overrides that apply now",
                        ),
                        **_GUARD,
                    },
                },
                "post": {
                    "operationId": "setOverride",
                    "summary": "Set weights, drain a vendor or pin one: applies from the next "
                    "message, recorded in the audit",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": ref("OverrideRequest"),
                                "examples": _EXAMPLES,
                            }
                        },
                    },
                    "responses": {
                        "201": _VENDORS,
                        "400": answer(
                            error_body("invalid_json", "invalid_override"),
                            "the body is not JSON (invalid_json), or not a JSON object, "
                            "or has a field its kind does not name, or a reason that is not "
                            f"a string of at most {MAX_REASON} characters (invalid_override)",
                        ),
                        **_GUARD,
                        "413": answer(
                            error_body("request_too_large"),
                            "the body is over limits.max_request_bytes",
                        ),
                        "422": _REFUSED,
                    },
                },
            },
            "/admin/v1/overrides/{vendor}": {
                "delete": {
                    "operationId": "restoreVendor",
                    "summary": "Restore a vendor: remove every override on it (its weight, "
                    "a drain, a pin on it)",
                    "parameters": [
                        {
                            "name": "vendor",
                            "in": "path",
                            "required": True,
                            "description": "a configured vendor",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "reason",
                            "in": "query",
                            "required": False,
                            "description": "kept in the audit",
                            "schema": {"type": "string", "maxLength": MAX_REASON},
                        },
                    ],
                    "responses": {
                        "200": _VENDORS,
                        "400": answer(
                            error_body("invalid_override"),
                            f"the reason is longer than {MAX_REASON} characters",
                        ),
                        **_GUARD,
                        "422": answer(
                            error_body("override_refused"),
                            "refused, nothing changed: an unknown vendor, or no vendor would "
                            "be left with a weight above 0",
                        ),
                    },
                }
            },
            "/admin/v1/audit": {
                "get": {
                    "operationId": "getAudit",
                    "summary": "The latest override changes, oldest first",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "how many events; below 1 reads as 1, above "
                            "10000 as 10000",
                            "schema": {"type": "integer", "default": 100},
                        }
                    ],
                    "responses": {
                        "200": answer(
                            closed({"events": {"type": "array", "items": ref("AuditEvent")}}),
                            "the events",
                        ),
                        "400": answer(error_body("bad_request"), "limit is not an integer"),
                        **_GUARD,
                    },
                }
            },
            "/admin/v1/reload": {
                "post": {
                    "operationId": "reloadConfig",
                    "summary": "Read the config file again and swap it in whole, or refuse it "
                    "whole (the running config stays)",
                    "responses": {
                        "200": answer(ref("Reloaded"), "swapped in: what changed"),
                        **_GUARD,
                        "422": answer(
                            ref("ReloadRefused"),
                            "refused: every error, with the file's path; nothing changed",
                        ),
                    },
                }
            },
            "/admin/v1/route": {
                "post": {
                    "operationId": "explainRoute",
                    "summary": "The plan a message would get now, and which rule chose it "
                    "(`mailmux route`); nothing is sent",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _route_request()}},
                    },
                    "responses": {
                        "200": answer(_explanation(), "the class, the rules and each vendor"),
                        "400": answer(
                            error_body("invalid_json", "invalid_message"),
                            "not JSON, or not a message: details lists every problem",
                        ),
                        **_GUARD,
                    },
                }
            },
            "/admin/v1/warmup": {
                "get": {
                    "operationId": "getWarmup",
                    "summary": "Each warm-up schedule today: day, cap, sent, days left, min share "
                    "(`mailmux warmup`)",
                    "responses": {"200": answer(_warmup(), "today's schedules"), **_GUARD},
                }
            },
            "/admin/v1/openapi.json": {
                "get": {
                    "operationId": "getAdminOpenApi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": answer(
                            {"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1"
                        )
                    },
                }
            },
        },
    }


#: The document every node serves.
ADMIN_OPENAPI: Schema = admin_openapi_document()
