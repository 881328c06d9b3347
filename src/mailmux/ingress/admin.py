"""The admin API under `/admin/v1/`: status, vendors, overrides, audit, reload, route,
warm-up.

Authentication. With `admin_keys` configured, every admin route needs
`Authorization: Bearer <admin key>`; a client key (`api_keys`, `clients`) is
refused with 403, so a service that can send mail cannot move traffic. The
audit names the caller by the key's place in the config (`admin_keys[0]`),
never by the key. Without `admin_keys` the admin API answers only when the
main listener is on loopback (then anyone on the host is an operator, the
caller is "anonymous"); on any other address every admin route answers 403
and mailmux still starts, so mail keeps flowing while the operator adds a key.

These routes are off the hot path: plain aiohttp handlers, JSON errors in the
native API's shape (`ingress/errors.py`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from mailmux.control import (
    MAX_REASON,
    Control,
    InvalidOverride,
    build_overrides,
)
from mailmux.explain import route_request
from mailmux.ingress.clients import ClientKeys
from mailmux.ingress.errors import error_response, json_response
from mailmux.ingress.openapi_admin import ADMIN_OPENAPI
from mailmux.message import InvalidMessage, Message
from mailmux.overrides import OverrideRefused, shares
from mailmux.reload import ReloadResult
from mailmux.vendors.inbound import Credential

Handler = Callable[[web.Request, str], Awaitable[web.Response]]
DEFAULT_AUDIT_LIMIT = 100
MAX_AUDIT_LIMIT = 10_000
#: The document served at /admin/v1/openapi.json; it depends on no setting.
_OPENAPI = orjson.dumps(ADMIN_OPENAPI)


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What the admin API needs; built by the app."""

    control: Control
    status: Callable[[], Awaitable[dict[str, Any]]]
    admin_keys: Callable[[], Sequence[str]]  # read per request: a reload may change them
    config: Callable[[], dict[str, Any]]  # the config file, when loaded, a reload refused
    reload: Callable[[str], Awaitable[ReloadResult]]
    client_keys: ClientKeys
    loopback: bool  # the main listener is on loopback: no admin key is needed then
    clock: Callable[[], float]
    explain: Callable[[Message], dict[str, Any]]  # the plan a message would get, step by step
    warmup: Callable[[], dict[str, Any]]  # today's UTC day and each warm-up schedule on it


class AdminApi:
    def __init__(self, ctx: AdminContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[web.RouteDef]:
        guard = self._guarded
        return [
            web.get("/admin/v1/status", guard(self.get_status)),
            web.get("/admin/v1/vendors", guard(self.get_vendors)),
            web.get("/admin/v1/overrides", guard(self.get_overrides)),
            web.post("/admin/v1/overrides", guard(self.post_override)),
            web.delete("/admin/v1/overrides/{vendor}", guard(self.delete_override)),
            web.get("/admin/v1/audit", guard(self.get_audit)),
            web.post("/admin/v1/reload", guard(self.post_reload)),
            # Open like /v1/openapi.json: it describes the API, it opens none of it.
            web.get("/admin/v1/openapi.json", self.get_openapi),
            web.post("/admin/v1/route", guard(self.post_route)),
            web.get("/admin/v1/warmup", guard(self.get_warmup)),
        ]

    def _guarded(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def guarded(request: web.Request) -> web.Response:
            who = self.who(request)
            if isinstance(who, web.Response):
                return who
            return await handler(request, who)

        return guarded

    def who(self, request: web.Request) -> str | web.Response:
        """The caller's name for the audit, or the 401/403 answer (the dashboard's too)."""
        keys = self.ctx.admin_keys()
        if not keys:
            if self.ctx.loopback:
                return "anonymous"
            return error_response(
                403,
                "forbidden",
                "the admin API needs admin_keys when listen is not a loopback address",
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            secret = token.encode()
            for index, key in enumerate(keys):
                if hmac.compare_digest(secret, key.encode()):
                    return f"admin_keys[{index}]"
            if self.ctx.client_keys.required and self.ctx.client_keys.identify(Credential(token)):
                return error_response(
                    403, "forbidden", "a client key is not an admin key: use one of admin_keys"
                )
        return error_response(
            401,
            "unauthorized",
            "missing or unknown admin key: send 'Authorization: Bearer <admin key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def get_openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=_OPENAPI, content_type="application/json")

    async def get_status(self, request: web.Request, who: str) -> web.Response:
        return json_response({**await self.ctx.status(), "config": self.ctx.config()})

    async def get_vendors(self, request: web.Request, who: str) -> web.Response:
        return json_response(await self._vendors())

    async def get_overrides(self, request: web.Request, who: str) -> web.Response:
        return json_response({"overrides": [o.to_json() for o in self.ctx.control.active()]})

    async def post_override(self, request: web.Request, who: str) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as err:
            return error_response(400, "invalid_json", f"the body is not JSON: {err}")
        if not isinstance(body, dict):
            return error_response(400, "invalid_override", "the body must be a JSON object")
        control = self.ctx.control
        try:
            new = build_overrides(body, now=self.ctx.clock(), who=who)
            await control.set(new, who=who, reason=str(body.get("reason") or ""))
        except InvalidOverride as err:
            return error_response(400, "invalid_override", str(err))
        except OverrideRefused as err:
            return error_response(422, "override_refused", str(err))
        return json_response(await self._vendors(), 201)

    async def delete_override(self, request: web.Request, who: str) -> web.Response:
        reason = request.query.get("reason", "")
        if len(reason) > MAX_REASON:
            return error_response(
                400, "invalid_override", f"reason: at most {MAX_REASON} characters"
            )
        try:
            await self.ctx.control.restore(request.match_info["vendor"], who=who, reason=reason)
        except OverrideRefused as err:
            return error_response(422, "override_refused", str(err))
        return json_response(await self._vendors())

    async def post_reload(self, request: web.Request, who: str) -> web.Response:
        """Reload the config file: 200 with what changed, 422 with every error (old one kept)."""
        result = await self.ctx.reload("api")
        if result.ok:
            return json_response(result.to_json())
        return error_response(
            422,
            "invalid_config",
            f"config {result.path} refused; the running config stays: {result.errors[0]}",
            extra=result.to_json(),
        )

    async def post_route(self, request: web.Request, who: str) -> web.Response:
        """`{from, to, cc, class, tags, client}` → the plan such a message would get, and why."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as err:
            return error_response(400, "invalid_json", f"the body is not JSON: {err}")
        try:
            message = route_request(body)
        except InvalidMessage as err:
            return error_response(
                400,
                "invalid_message",
                "; ".join(map(str, err.errors)),
                details=[
                    {"path": e.path, "code": e.code, "message": e.message} for e in err.errors
                ],
            )
        return json_response(self.ctx.explain(message))

    async def get_audit(self, request: web.Request, who: str) -> web.Response:
        try:
            limit = int(request.query.get("limit", DEFAULT_AUDIT_LIMIT))
        except ValueError:
            return error_response(400, "bad_request", "limit must be an integer")
        limit = max(1, min(limit, MAX_AUDIT_LIMIT))
        return json_response({"events": await self.ctx.control.audit(limit)})

    async def get_warmup(self, request: web.Request, who: str) -> web.Response:
        return json_response(self.ctx.warmup())

    async def _vendors(self) -> dict[str, Any]:
        return self.vendors_report(await self.ctx.status())

    def vendors_report(self, status: dict[str, Any]) -> dict[str, Any]:
        """Each vendor: configured and effective weight, its overrides, health, last error.

        Built from a `status()` the caller already has, so the dashboard
        reads the status once per second for both its own fields and these.
        """
        control = self.ctx.control
        routes = control.routes()
        share = shares(routes)
        configured = {r.vendor: r.weight for r in control.config_routes}
        active = control.active()
        vendors = []
        for v in status["vendors"]:
            name = v["name"]
            vendors.append(
                {
                    "name": name,
                    "kind": v["kind"],
                    "configured_weight": configured[name],
                    "weight": v["weight"],
                    "share": share.get(name, 0.0),
                    "fallback": v["fallback"],
                    "drained": v["drained"],
                    "overrides": [o.to_json() for o in active if o.vendor == name],
                    "state": v["state"],
                    "ejected_until": v["ejected_until"],
                    "last_reason": v["last_reason"],
                    "last_error": v["last_error"],
                }
            )
        return {"vendors": vendors, "config": self.ctx.config()}
