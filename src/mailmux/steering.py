"""Steering: what the config, the rules and the operator make of one message's route.

The Deliverer asks `steer(message)` once per message: the rules resolve the
message's traffic class and the rule that shapes its plan (`rules.decide`),
and its routes are the config's narrowed by that class and rule
(`rules.class_routes`) with the operator's overrides layered last
(`overrides.effective_routes`), so an operator's drain or pin wins over any
class or rule. Routes depend only on (class, rule), so each pair's are
computed once and kept; a change of overrides or config builds a new
Steering (the App does it as it applies the change), which keeps the hot
path to one `decide` and one dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailmux.classes import BUILT_IN, ClassBook, TrafficClass
from mailmux.message import Message
from mailmux.overrides import Override, effective_routes
from mailmux.routing import Route
from mailmux.rules import Rule, Rules, class_routes, decide


@dataclass(frozen=True, slots=True)
class Steer:
    """One message's class and the routes its plan is drawn over."""

    traffic_class: TrafficClass
    routes: tuple[Route, ...]
    rule: Rule | None = None  # the rule that chose vendors or weights
    class_rule: Rule | None = None  # the rule that set the class


class Steering:
    """The classes, rules, config routes and overrides of one moment, with routes cached."""

    __slots__ = ("_cache", "book", "config_routes", "now", "overrides", "rules")

    def __init__(
        self,
        book: ClassBook,
        rules: Rules,
        config_routes: Sequence[Route],
        overrides: Sequence[Override] = (),
        now: float = 0.0,
    ) -> None:
        """`overrides` are those in force at `now`; the App builds a new Steering when they
        change or expire (Control's timer), so they are not re-checked per message."""
        self.book = book
        self.rules = rules
        self.config_routes = tuple(config_routes)
        self.overrides = tuple(overrides)
        self.now = now
        self._cache: dict[tuple[str, int], tuple[Route, ...]] = {}

    @classmethod
    def plain(cls, routes: Sequence[Route]) -> Steering:
        """Built-in classes, no rules, no overrides: `routes` for every message."""
        return cls(ClassBook(BUILT_IN), Rules.of(()), routes)

    def steer(self, message: Message) -> Steer:
        decision = decide(message, message.client, self.rules, self.book)
        cls, rule = decision.traffic_class, decision.route_rule
        key = (cls.name, -1 if rule is None else rule.index)
        routes = self._cache.get(key)
        if routes is None:
            narrowed = class_routes(self.config_routes, cls, rule)
            routes = self._cache[key] = effective_routes(narrowed, self.overrides, self.now)
        return Steer(cls, routes, rule, decision.class_rule)
