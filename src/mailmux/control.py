"""The operator's levers on one node: overrides kept in the store, routes recomputed.

`Control` owns the node's overrides. Each change is checked against the
config (`overrides.check`), written with its audit event in one store
transaction, and only then applied: the Deliverer reads `routes` once per
message, so assigning a new tuple moves traffic at the next message with no
lock. An override with an expiry stops applying on its own: a timer set at
the next expiry recomputes the routes and removes the expired rows, with an
`expire` audit event, so `mailmux audit` shows when traffic moved back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mailmux.notices import Notice, NoticeBoard, NoticeKind
from mailmux.overrides import (
    Override,
    OverrideKind,
    OverrideRefused,
    check,
    effective_routes,
    merged,
    next_expiry,
    parse_duration,
    shares,
)
from mailmux.routing import Route
from mailmux.spool.base import AuditEvent, Store

log = logging.getLogger("mailmux.control")

#: Who an expiry is recorded as: mailmux itself.
SYSTEM = "mailmux"


class Control:
    """Overrides of one node, applied through `apply(routes)` (the App sets the Deliverer's)."""

    def __init__(
        self,
        config_routes: Sequence[Route],
        store: Store,
        apply: Callable[[tuple[Route, ...]], None],
        clock: Callable[[], float],
        notices: NoticeBoard | None = None,
    ) -> None:
        self.config_routes = tuple(config_routes)
        self._store = store
        self._apply = apply
        self._clock = clock
        self._notices = notices if notices is not None else NoticeBoard()
        self.overrides: tuple[Override, ...] = ()
        self._timer: asyncio.TimerHandle | None = None

    async def load(self) -> None:
        """Take the stored overrides (after a restart, or another node's), then apply them."""
        stored = await self._store.list_overrides()
        known = {r.vendor for r in self.config_routes}
        loaded = [Override.from_json(data) for data in stored.values()]
        for o in loaded:
            if o.vendor not in known:
                log.warning("stored override %s names vendor %r, not configured", o.key, o.vendor)
        self.overrides = tuple(o for o in loaded if o.vendor in known)
        await self._expire()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def set(self, new: Sequence[Override], *, who: str, reason: str) -> tuple[Route, ...]:
        """Add `new` (each replaces the override with its key); OverrideRefused if it can't."""
        now = self._clock()
        after = merged(self.overrides, new)
        check(self.config_routes, after, now)
        keys = {o.key for o in new}
        previous = [o for o in self.overrides if o.key in keys]
        audit = AuditEvent(
            at=now,
            who=who,
            action=new[0].kind.value,
            reason=reason,
            what=[o.to_json() for o in new],
            previous=[o.to_json() for o in previous],
        )
        await self._store.save_overrides({o.key: o.to_json() for o in new}, audit=audit)
        return self._announce(audit, self._install(after))

    async def restore(self, vendor: str, *, who: str, reason: str) -> tuple[Route, ...]:
        """Remove every override on `vendor` (a pin on it, a drain, its weight)."""
        if vendor not in {r.vendor for r in self.config_routes}:
            raise OverrideRefused(f"unknown vendor {vendor!r}")
        now = self._clock()
        removed = [o for o in self.overrides if o.vendor == vendor]
        after = [o for o in self.overrides if o.vendor != vendor]
        check(self.config_routes, after, now)
        audit = AuditEvent(
            at=now,
            who=who,
            action="restore",
            reason=reason,
            what=[{"vendor": vendor}],
            previous=[o.to_json() for o in removed],
        )
        await self._store.save_overrides({}, remove=[o.key for o in removed], audit=audit)
        return self._announce(audit, self._install(after))

    def check_reconfigure(self, config_routes: Sequence[Route]) -> None:
        """OverrideRefused if the overrides in force leave `config_routes` nothing to route to.

        A pin or weights on vendors the new file gives no weight are not
        silently dropped: the reload is refused instead.
        """
        known = {r.vendor for r in config_routes}
        check(config_routes, [o for o in self.overrides if o.vendor in known], self._clock())

    def reconfigure(self, config_routes: Sequence[Route]) -> tuple[Route, ...]:
        """A reload changed the config's routes: the overrides in force layer over the new ones.

        Overrides on a vendor the file removed stop applying and stay stored
        (they apply again if the vendor comes back). Raises like
        `check_reconfigure`, changing nothing.
        """
        self.check_reconfigure(config_routes)
        known = {r.vendor for r in config_routes}
        for o in self.overrides:
            if o.vendor not in known:
                log.warning("override %s stops applying: vendor %r was removed", o.key, o.vendor)
        self.config_routes = tuple(config_routes)
        return self._install([o for o in self.overrides if o.vendor in known])

    def routes(self) -> tuple[Route, ...]:
        return effective_routes(self.config_routes, self.overrides, self._clock())

    def active(self) -> list[Override]:
        now = self._clock()
        return [o for o in self.overrides if o.applies(now)]

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        return [
            {
                "id": e.id,
                "at": e.at,
                "who": e.who,
                "action": e.action,
                "reason": e.reason,
                "what": list(e.what),
                "previous": list(e.previous),
            }
            for e in await self._store.list_audit(limit=limit)
        ]

    def _install(self, overrides: Sequence[Override]) -> tuple[Route, ...]:
        """Apply `overrides` now and arm the timer for the next expiry."""
        self.overrides = tuple(overrides)
        now = self._clock()
        routes = effective_routes(self.config_routes, self.overrides, now)
        self._apply(routes)
        self.close()
        at = next_expiry(self.overrides, now)
        if at is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(at - now, 0.0), self._expire_soon)
        return routes

    def _expire_soon(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._expire())
        task.add_done_callback(_log_failure)

    async def _expire(self) -> None:
        """Apply what still holds; drop expired rows from the store with one audit event."""
        now = self._clock()
        expired = [o for o in self.overrides if not o.applies(now)]
        self._install([o for o in self.overrides if o.applies(now)])
        if expired:
            audit = AuditEvent(
                at=now,
                who=SYSTEM,
                action="expire",
                reason="expired",
                what=[],
                previous=[o.to_json() for o in expired],
            )
            await self._store.save_overrides({}, remove=[o.key for o in expired], audit=audit)
            self._announce(audit, self.routes())

    def _announce(self, audit: AuditEvent, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        """Publish the change `audit` records, with the split it left."""
        split = {name: round(share * 100, 1) for name, share in shares(routes).items()}
        vendors = sorted(
            {str(o["vendor"]) for o in [*audit.what, *audit.previous] if "vendor" in o}
        )
        said = f" ({audit.reason})" if audit.reason else ""
        self._notices.publish(
            Notice(
                audit.at,
                NoticeKind.OVERRIDE,
                f"{audit.action} {', '.join(vendors)} by {audit.who}{said}; split "
                + " ".join(f"{name}={pct:g}%" for name, pct in split.items()),
                vendors[0] if len(vendors) == 1 else None,
                {
                    "action": audit.action,
                    "who": audit.who,
                    "reason": audit.reason,
                    "what": list(audit.what),
                    "previous": list(audit.previous),
                    "split": split,
                },
            )
        )
        return routes


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("could not remove expired overrides: %s", task.exception())


#: The fields of `POST /admin/v1/overrides` per kind; any other is refused, so a typo (or a
#: field of another kind) is not silently ignored.
OVERRIDE_FIELDS: Mapping[OverrideKind, tuple[str, ...]] = {
    OverrideKind.WEIGHTS: ("kind", "weights", "for", "reason"),
    OverrideKind.DRAIN: ("kind", "vendor", "hard", "for", "reason"),
    OverrideKind.PIN: ("kind", "vendor", "hard", "for", "reason"),
}
#: The longest reason kept with an override and its audit event.
MAX_REASON = 1000


class InvalidOverride(OverrideRefused):
    """An override request whose fields are wrong as such (answered 400, not 422)."""


def check_override_fields(body: Mapping[str, Any]) -> None:
    """Refuse a field an override request does not have, or a reason that is not a short
    string (InvalidOverride), before any value is judged."""
    kind = body.get("kind")
    if kind not in set(OverrideKind):  # an unknown kind is refused for its value, later
        return
    fields = OVERRIDE_FIELDS[OverrideKind(kind)]
    unknown = sorted(str(k) for k in body if k not in fields)
    if unknown:
        raise InvalidOverride(
            f"unknown field(s) for {kind}: {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidOverride("reason: must be a string")
    if reason is not None and len(reason) > MAX_REASON:
        raise InvalidOverride(f"reason: at most {MAX_REASON} characters")


def build_overrides(body: dict[str, Any], *, now: float, who: str) -> list[Override]:
    """The overrides an admin request asks for (`kind`, `weights` or `vendor`, `hard`,
    `for`, `reason`).

    Raises InvalidOverride as `check_override_fields` does, OverrideRefused for
    a value it cannot apply.
    """
    check_override_fields(body)
    duration = body.get("for")
    expires_in = None if duration is None else parse_duration(duration)
    try:
        kind = OverrideKind(str(body.get("kind")))
    except ValueError:
        raise OverrideRefused("kind must be one of: weights, drain, pin") from None
    expires_at = None if expires_in is None else now + expires_in
    reason = str(body.get("reason") or "")
    common: dict[str, Any] = {
        "expires_at": expires_at,
        "reason": reason,
        "created_at": now,
        "created_by": who,
    }
    if kind is OverrideKind.WEIGHTS:
        weights = body.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise OverrideRefused('weights needs {"weights": {"<vendor>": <weight>, ...}}')
        out = []
        for vendor, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise OverrideRefused(f"weights.{vendor}: must be a number")
            out.append(Override(kind, str(vendor), weight=float(weight), **common))
        return out
    vendor = body.get("vendor")
    if not isinstance(vendor, str) or not vendor:
        raise OverrideRefused(f'{kind} needs {{"vendor": "<name>"}}')
    hard = body.get("hard", False)
    if not isinstance(hard, bool):
        raise OverrideRefused("hard must be true or false")
    if hard and kind is not OverrideKind.DRAIN:
        raise OverrideRefused("hard applies to drain only")
    return [Override(kind, vendor, hard=hard, **common)]
