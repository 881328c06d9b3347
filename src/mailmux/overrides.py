"""Runtime overrides: an operator's weights, drains and pins, layered over the config.

An override is plain data (`to_json` / `from_json`) so that a store can keep
it and, with PostgreSQL, every node can read the same rows. Overrides never
touch the Router: `effective_routes` turns the config's `Route`s and the
overrides that still apply into new `Route`s, and the Router plans over those
as it would over the config's.

The layers, in order (a later layer wins):

1. `weights`: one vendor's weight replaced (`mailmux weights a=0 b=100` is
   one override per vendor, so `restore a` can take back a's part alone);
2. `drain`: weight 0, still a last-resort fallback; `hard`: not even that;
3. `pin`: every first pick goes to one vendor; the others keep their place
   as fallbacks (weight 0, fallback on). There is at most one pin.

Every function here is pure: the clock is an argument.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from mailmux.routing import Route


class OverrideKind(StrEnum):
    WEIGHTS = "weights"
    DRAIN = "drain"
    PIN = "pin"


class OverrideRefused(ValueError):
    """A change that cannot apply (unknown vendor, bad weight, nothing left to route to)."""


@dataclass(frozen=True, slots=True)
class Override:
    """One operator decision on one vendor, until `expires_at` (epoch seconds) or for good."""

    kind: OverrideKind
    vendor: str
    weight: float | None = None  # `weights` only
    hard: bool = False  # `drain` only: no fallback either
    expires_at: float | None = None
    reason: str = ""
    created_at: float = 0.0
    created_by: str = ""

    @property
    def key(self) -> str:
        """What a new override replaces: the same kind on the same vendor; any other pin."""
        return "pin" if self.kind is OverrideKind.PIN else f"{self.kind}:{self.vendor}"

    def applies(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "vendor": self.vendor,
            "weight": self.weight,
            "hard": self.hard,
            "expires_at": self.expires_at,
            "reason": self.reason,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Override:
        weight = data.get("weight")
        expires = data.get("expires_at")
        return cls(
            kind=OverrideKind(data["kind"]),
            vendor=str(data["vendor"]),
            weight=None if weight is None else float(weight),
            hard=bool(data.get("hard", False)),
            expires_at=None if expires is None else float(expires),
            reason=str(data.get("reason", "")),
            created_at=float(data.get("created_at", 0.0)),
            created_by=str(data.get("created_by", "")),
        )


def effective_routes(
    config_routes: Sequence[Route], overrides: Iterable[Override], now: float
) -> tuple[Route, ...]:
    """The config's routes with every override that still applies at `now` layered on."""
    live = [o for o in overrides if o.applies(now)]
    routes = {r.vendor: r for r in config_routes}
    for o in live:
        if o.kind is OverrideKind.WEIGHTS and o.vendor in routes and o.weight is not None:
            routes[o.vendor] = replace(routes[o.vendor], weight=o.weight)
    drained = set()
    for o in live:
        if o.kind is OverrideKind.DRAIN and o.vendor in routes:
            drained.add(o.vendor)
            route = routes[o.vendor]
            routes[o.vendor] = replace(route, weight=0.0, fallback=True, drained=o.hard)
    pin = next((o for o in live if o.kind is OverrideKind.PIN and o.vendor in routes), None)
    if pin is not None:
        for name, route in routes.items():
            if name in drained:
                continue  # a drain outranks a pin: pinning a drained vendor routes nothing
            if name == pin.vendor:
                routes[name] = replace(route, weight=route.weight or 1.0)
            else:
                routes[name] = replace(route, weight=0.0, fallback=True)
    return tuple(routes[r.vendor] for r in config_routes)


def next_expiry(overrides: Iterable[Override], now: float) -> float | None:
    """The earliest instant after `now` at which an override stops applying."""
    return min(
        (o.expires_at for o in overrides if o.expires_at is not None and o.expires_at > now),
        default=None,
    )


def merged(current: Sequence[Override], new: Sequence[Override]) -> list[Override]:
    """`current` with each of `new` replacing the override it has the key of."""
    keys = {o.key for o in new}
    return [o for o in current if o.key not in keys] + list(new)


def check(
    config_routes: Sequence[Route], overrides: Sequence[Override], now: float
) -> tuple[Route, ...]:
    """The effective routes, or OverrideRefused if they would route no first pick at all."""
    known = {r.vendor for r in config_routes}
    for o in overrides:
        if o.vendor not in known:
            raise OverrideRefused(
                f"unknown vendor {o.vendor!r}; configured: {', '.join(sorted(known))}"
            )
        if o.weight is not None and not (math.isfinite(o.weight) and o.weight >= 0):
            raise OverrideRefused(f"{o.vendor}: weight must be a finite number >= 0")
    routes = effective_routes(config_routes, overrides, now)
    if not any(r.weight > 0 and not r.drained for r in routes):
        raise OverrideRefused(
            "refused: no vendor would be left with a weight above 0 "
            f"({', '.join(f'{r.vendor} {r.weight:g}' for r in routes)})"
        )
    return routes


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d)?\s*$")  # ASCII digits only
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | float) -> float:
    """Seconds from `90`, `90s`, `15m`, `2h` or `1d` (what `--for` and the API's `for` take)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise OverrideRefused(f"not a duration: {value!r} (e.g. 90s, 15m, 2h)")
        seconds = float(match[1]) * _UNIT_SECONDS[match[2] or "s"]
    if not (math.isfinite(seconds) and seconds > 0):
        raise OverrideRefused(f"a duration must be above 0 (got {value!r})")
    return seconds


def shares(routes: Sequence[Route]) -> dict[str, float]:
    """Each vendor's share of first picks (0..1) while every vendor is up, by weight."""
    total = sum(r.weight for r in routes if not r.drained)
    return {r.vendor: (r.weight / total if total > 0 and not r.drained else 0.0) for r in routes}
