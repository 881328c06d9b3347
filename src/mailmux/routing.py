"""The router: which vendors to try for one message, and in which order.

This generalizes Cloudflare's two-vendor picker (draw u uniformly from
[0, 1); u < ratio → vendor 1, else vendor 2) to N vendors. One draw picks
the first vendor by weight among the vendors that are up, and the other
vendors follow as fallbacks in descending weight. With weights (r, 1 - r)
the first pick is exactly the original picker for the same draw, so moving
from that picker to mailmux does not change who gets which message.

The router is pure: no I/O, no clock, and the random source is injected, so
tests can replay draws. It runs once per message, so it is a few linear
passes over a handful of routes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from mailmux.message import Message


class Availability(Enum):
    """What the router knows about a vendor's health (a snapshot taken from Health)."""

    AVAILABLE = "available"  # healthy: gets its weighted share.
    PROBE = "probe"  # ejection expired: routed like AVAILABLE; Health.admit lets one
    # half-open probe through and turns the other attempts away.
    EJECTED = "ejected"  # left out of the plan, unless every eligible vendor is ejected.


@dataclass(frozen=True, slots=True)
class Route:
    """One vendor as the router sees it: config with runtime overrides already applied."""

    vendor: str
    weight: float  # >= 0, finite (validated by config)
    fallback: bool = True  # False: never used, not even as a fallback, when weight is 0
    drained: bool = False  # operator drain: no traffic at all


@dataclass(frozen=True, slots=True)
class Plan:
    """The ordered candidates for one message."""

    vendors: tuple[str, ...]  # ordered candidates to try
    panic: bool = False  # every eligible vendor was ejected; routed by weight anyway
    waiting: tuple[str, ...] = ()  # eligible, but at a rate limit or quota now: not planned
    over_cap: tuple[str, ...] = ()  # planned past their warm-up cap: last, or only in need


class RandomSource(Protocol):
    """The only randomness the router needs; `random.Random` satisfies it."""

    def random(self) -> float: ...  # uniform in [0, 1)


_NO_PLAN = Plan(())


def plan(
    message: Message,
    routes: Sequence[Route],
    availability: Mapping[str, Availability],
    rng: RandomSource,
    *,
    avoid: str | None = None,
    full: Collection[str] = (),
    capped: Collection[str] = (),
) -> Plan:
    """Order the vendors to try for `message`.

    - Eligible vendors are those not drained with a weight above 0 or
      `fallback` set. Vendors absent from `availability` count as available;
      AVAILABLE and PROBE vendors are up.
    - `avoid` (the vendor tried last, for retries) is held back and goes at
      the end of the plan, so it is never first while another vendor is up;
      if it is the only vendor up it is the whole plan.
    - The first vendor is a weighted pick among the other up vendors with a
      weight above 0, in the order of `routes`, using exactly one draw from
      `rng` (no draw when there is no such vendor). The rest follow in
      descending weight, ties in the order of `routes`, so weight-0 fallbacks
      come last.
    - If no eligible vendor is up, the same rules run over all eligible
      vendors ignoring health, and the plan says `panic`: sending to a vendor
      that may be bad is better than sending nowhere.
    - `full` vendors (at a rate limit or quota, or told to wait by a 429) are
      left out, even in panic: asking would only be refused. The plan names
      them in `waiting`, so the caller knows the message can go later.
    - `capped` vendors (past today's warm-up cap) spill their share to the
      others by weight: they are planned after every other vendor, so they
      are asked only when no other vendor took the message; when they are all
      that is up they are the plan. `over_cap` names the capped vendors
      planned, so the caller records a cap exceeded.

    `message` is not read: the caller plans over the routes of its class and rule.
    """
    eligible = [r for r in routes if not r.drained and (r.weight > 0 or r.fallback)]
    waiting: tuple[str, ...] = ()
    if full:
        waiting = tuple(r.vendor for r in eligible if r.vendor in full)
        eligible = [r for r in eligible if r.vendor not in full]
    if not eligible:
        return Plan((), waiting=waiting) if waiting else _NO_PLAN
    pool = [
        r
        for r in eligible
        if availability.get(r.vendor, Availability.AVAILABLE) is not Availability.EJECTED
    ]
    panic = not pool
    if panic:
        pool = eligible

    held_back: Route | None = None
    if avoid is not None:
        for index, route in enumerate(pool):
            if route.vendor == avoid:
                held_back = pool.pop(index)
                break

    over: list[Route] = []
    if capped:
        over = [r for r in pool if r.vendor in capped]
        uncapped_held_back = held_back is not None and held_back.vendor not in capped
        if len(over) < len(pool) or uncapped_held_back:
            pool = [r for r in pool if r.vendor not in capped]
        else:
            over = []  # the capped vendors are all there is: ordered as usual
    first = _weighted_pick(pool, rng)
    ordered = sorted((r for r in pool if r is not first), key=_descending_weight)
    if first is not None:
        ordered.insert(0, first)
    if held_back is not None:
        ordered.append(held_back)
    ordered += sorted(over, key=_descending_weight)
    names = tuple(r.vendor for r in ordered)
    if capped:
        return Plan(names, panic, waiting, tuple(n for n in names if n in capped))
    return Plan(names, panic=panic, waiting=waiting)


def _weighted_pick(candidates: Sequence[Route], rng: RandomSource) -> Route | None:
    """Walk cumulative weights: the first route whose running sum exceeds u * total.

    The first running sum is the first weight itself, and for weights (r, 1 - r)
    the float sum r + (1 - r) is exactly 1.0, so the test is exactly `u < r`
    there, as in Cloudflare's picker.
    """
    total = 0.0
    for route in candidates:
        total += route.weight
    if not total > 0:
        return None
    target = rng.random() * total
    cumulative = 0.0
    chosen: Route | None = None
    for route in candidates:
        if route.weight > 0:
            cumulative += route.weight
            chosen = route
            if target < cumulative:
                return route
    # Only reached when u * total rounds up to the total: the last weighted route.
    return chosen


def _descending_weight(route: Route) -> float:
    return -route.weight
