"""Why a message would go where it goes: the answer behind `mailmux route`.

`explain` runs the same steps a message's plan takes — rules and class
(`rules.decide`), the class's and the rule's vendors (`rules.class_routes`),
the operator's overrides (`overrides.effective_routes`), health (`plan`) —
and reports each step's result instead of drawing a vendor: the class and
the rule that set it, the rule that chose the vendors, each vendor's weight,
its share of first picks right now and its health, the vendors left out and
the order fallbacks are tried in.

Pure: the routes, overrides, clock reading and health snapshot are arguments.
`route_request` validates the admin API's request body into a Message with
the native API's field rules.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from mailmux.classes import ClassBook, TrafficClass
from mailmux.message import DEFAULT_LIMITS, InvalidMessage, Message
from mailmux.native import JsonChecker
from mailmux.overrides import Override, effective_routes
from mailmux.routing import Availability, Route, plan
from mailmux.rules import Rules, class_routes, decide

_REQUEST_FIELDS = frozenset({"from", "to", "cc", "class", "tags", "client"})


class _NoDraw:
    """The explanation shows shares, not one draw: any draw gives the same pool."""

    def random(self) -> float:
        return 0.0


def route_request(body: object) -> Message:
    """`{from, to, cc, class, tags, client}` as the Message a plan is explained for.

    Raises InvalidMessage listing every problem.
    """
    check = JsonChecker(DEFAULT_LIMITS)
    if not isinstance(body, dict):
        check.wrong_type("", body, "an object")
        raise InvalidMessage(check.errors)
    check.unknown(body, _REQUEST_FIELDS, "")
    sender = None
    if body.get("from") is None:
        check.fail("from", "required", "a sender address is required")
    else:
        sender = check.address(body["from"], "from")
    to, cc = (check.addresses(body.get(key), key) for key in ("to", "cc"))
    if not (body.get("to") or body.get("cc")):
        check.fail("to", "required", "at least one recipient is required in to or cc")
    traffic_class = check.traffic_class(body.get("class"), "class")
    tags = body.get("tags") or []
    if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        check.wrong_type("tags", tags, "an array of strings")
        tags = []
    client = check.string(body.get("client"), "client")
    if check.errors or sender is None:
        raise InvalidMessage(check.errors)
    return Message(
        sender, to, cc, tags=tuple(tags), traffic_class=traffic_class, client=client or None
    )


def _class_json(cls: TrafficClass) -> dict[str, Any]:
    shown = asdict(cls)
    shown["vendors"] = None if cls.vendors is None else sorted(cls.vendors)
    shown["weights"] = None if cls.weights is None else dict(cls.weights)
    shown["ambiguous"] = cls.ambiguous.value
    return shown


def explain(
    message: Message,
    *,
    rules: Rules,
    book: ClassBook,
    config_routes: Sequence[Route],
    overrides: Sequence[Override],
    now: float,
    availability: Mapping[str, Availability],
    full: Callable[[bool], Collection[str]] | None = None,
    capped: Collection[str] = (),
    warm: Callable[[tuple[Route, ...]], tuple[Route, ...]] | None = None,
) -> dict[str, Any]:
    """The plan `message` would get, step by step, as JSON (see the module docstring).

    `full(urgent)` and `capped` are the vendors at a rate limit and past
    today's warm-up cap now, as a first attempt of the message's class sees
    them; `warm` raises min-share vendors' weights (`Capacity`).
    """
    decision = decide(message, message.client, rules, book)
    cls = decision.traffic_class
    narrowed = class_routes(config_routes, cls, decision.route_rule)
    routes = effective_routes(narrowed, overrides, now)
    if warm is not None:
        routes = warm(routes)
    limited = () if full is None else full(cls.priority > book.lowest_priority)
    planned = plan(message, routes, availability, _NoDraw(), full=limited, capped=capped)
    place = {r.vendor: i for i, r in enumerate(routes)}
    by_name = {r.vendor: r for r in routes}
    over = planned.over_cap
    firsts = sorted(
        (v for v in planned.vendors if v not in over), key=lambda v: (-by_name[v].weight, place[v])
    )
    first_total = sum(by_name[v].weight for v in firsts)
    order = firsts + list(over)  # past their cap: asked only when no other vendor took it
    kept = set(by_name)
    configured = {r.vendor: r.weight for r in config_routes}
    vendors = [
        {
            "name": r.vendor,
            "configured_weight": configured[r.vendor],
            "weight": r.weight,
            "share": r.weight / first_total if r.vendor in firsts and first_total > 0 else 0.0,
            "fallback": r.fallback,
            "drained": r.drained,
            "state": availability.get(r.vendor, Availability.AVAILABLE).value,
            "in_plan": r.vendor in order,
            "at_limit": r.vendor in planned.waiting,
            "over_cap": r.vendor in over,
        }
        for r in routes
    ]
    return {
        "class": _class_json(cls),
        "requested_class": message.traffic_class,
        "class_rule": None if decision.class_rule is None else decision.class_rule.to_json(),
        "route_rule": None if decision.route_rule is None else decision.route_rule.to_json(),
        "vendors": vendors,
        "left_out": [r.vendor for r in config_routes if r.vendor not in kept],
        "order": order,
        "panic": planned.panic,
    }
