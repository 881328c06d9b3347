"""Routing rules: an ordered list that sets a message's class or narrows its vendors.

A rule is a match and one action (`rules:` in the config):

```yaml
rules:
  - match: {tags: [password-reset]}         # a shape's tag or category → a class
    class: otp
  - match: {recipient_domain: [gmail.com]}  # every gmail.com recipient to vendor a
    vendors: [a]
  - match: {class: bulk, client: [newsletter]}
    weights: {b: 80, c: 20}
```

Semantics, in two passes over the list, each taking the first rule that matches:

1. **Class.** The first matching rule whose action is `class` sets the
   message's class. It matches on the message's own class (as the API field,
   the `X-Mailmux-Class` header or the shape gave it; a name the config does
   not know counts as the default class, `transactional`).
2. **Vendors.** The first matching rule whose action is `vendors` or
   `weights` shapes the plan. It matches on the class pass 1 resolved.
   `vendors` removes every other vendor from the plan (not even a fallback);
   `weights` replaces the weights, and a vendor it does not name gets weight 0
   and stays a fallback as configured (`fallback: false` leaves it out).

A rule's position in the list is its precedence within its pass; a class
rule and a vendor rule never compete. The vendors a rule leaves are always
within those the class allows (`classes.<name>.vendors`), and the
operator's overrides (drain, pin, weights) layer over the result, so a drain
still wins over any rule.

A match holds when every field it gives holds (an empty match holds for
every message):

- `class`: one name or a list; the message's class is one of them;
- `sender_domain`, `recipient_domain`: lists of domains, case-insensitive;
  `example.com` is that domain only, `*.example.com` its subdomains only.
  A recipient match holds when any of to, cc or bcc is at one of them;
- `tags`: the message has any of these tags (the ESP-shaped APIs put a
  shape's tags and categories in the message's tags);
- `client`: one name or a list; the configured client whose key sent it.

Pure, and cheap because it runs per message: matches are compiled into sets
once per config, the rules are split by pass, and a message's recipient
domains are collected only when some rule asks for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mailmux.classes import ClassBook, TrafficClass
from mailmux.message import Address, Message
from mailmux.routing import Route

if TYPE_CHECKING:
    from mailmux.config import Config
    from mailmux.config_classes import MatchConfig, RuleConfig


def _domain_of(address: Address) -> str:
    return address.email.rpartition("@")[2].lower()


def _parents(domains: Iterable[str]) -> frozenset[str]:
    """Every parent domain of `domains`: what a `*.parent` pattern matches them by."""
    found: set[str] = set()
    for domain in domains:
        at = domain.find(".")
        while at != -1:
            found.add(domain[at + 1 :])
            at = domain.find(".", at + 1)
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Domains:
    """Domain patterns: `exact` names match themselves, `parents` match their subdomains."""

    patterns: tuple[str, ...]  # as configured (lower-cased), for explanations
    exact: frozenset[str]
    parents: frozenset[str]  # "example.com" for the pattern "*.example.com"

    @classmethod
    def of(cls, patterns: Iterable[str]) -> Domains:
        shown = tuple(p.lower() for p in patterns)
        return cls(
            shown,
            frozenset(p for p in shown if not p.startswith("*.")),
            frozenset(p[2:] for p in shown if p.startswith("*.")),
        )


class Facts:
    """What the rules ask about one message, worked out once for all of them (and only
    what some rule asks: a message's domains are not looked at without domain rules)."""

    __slots__ = ("client", "recipient_parents", "recipients", "sender", "sender_parents", "tags")

    def __init__(self, message: Message, client: str | None, asks: Asks) -> None:
        self.sender = self.sender_parents = _NOTHING
        self.recipients = self.recipient_parents = _NOTHING
        if asks.sender:
            self.sender = frozenset((_domain_of(message.sender),))
            if asks.sender_parents:
                self.sender_parents = _parents(self.sender)
        if asks.recipients:
            self.recipients = frozenset(
                [_domain_of(a) for group in (message.to, message.cc, message.bcc) for a in group]
            )
            if asks.recipient_parents:
                self.recipient_parents = _parents(self.recipients)
        self.tags = message.tags
        self.client = client


_NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Asks:
    """Which facts about a message some rule of a list needs."""

    sender: bool = False
    sender_parents: bool = False  # some sender pattern is `*.domain`
    recipients: bool = False
    recipient_parents: bool = False

    @classmethod
    def of(cls, matches: Iterable[Match]) -> Asks:
        listed = list(matches)
        senders = [m.sender_domains for m in listed if m.sender_domains is not None]
        recipients = [m.recipient_domains for m in listed if m.recipient_domains is not None]
        return cls(
            sender=bool(senders),
            sender_parents=any(d.parents for d in senders),
            recipients=bool(recipients),
            recipient_parents=any(d.parents for d in recipients),
        )


@dataclass(frozen=True, slots=True)
class Match:
    """What a rule matches; a field that is None is not asked about."""

    classes: frozenset[str] | None = None
    sender_domains: Domains | None = None
    recipient_domains: Domains | None = None
    tags: frozenset[str] | None = None
    clients: frozenset[str] | None = None

    @classmethod
    def from_config(cls, match: MatchConfig) -> Match:
        def names(values: Sequence[str] | None) -> frozenset[str] | None:
            return None if values is None else frozenset(values)

        return cls(
            classes=names(match.traffic_class),
            sender_domains=None if match.sender_domain is None else Domains.of(match.sender_domain),
            recipient_domains=(
                None if match.recipient_domain is None else Domains.of(match.recipient_domain)
            ),
            tags=names(match.tags),
            clients=names(match.client),
        )

    def holds(self, traffic_class: str, facts: Facts) -> bool:
        if self.classes is not None and traffic_class not in self.classes:
            return False
        if self.clients is not None and facts.client not in self.clients:
            return False
        if self.tags is not None and self.tags.isdisjoint(facts.tags):
            return False
        # A domain matches an exact pattern, or a `*.` pattern by one of its parents.
        sender = self.sender_domains
        if (
            sender is not None
            and sender.exact.isdisjoint(facts.sender)
            and sender.parents.isdisjoint(facts.sender_parents)
        ):
            return False
        wanted = self.recipient_domains
        return wanted is None or not (
            wanted.exact.isdisjoint(facts.recipients)
            and wanted.parents.isdisjoint(facts.recipient_parents)
        )

    def to_json(self) -> dict[str, Any]:
        """The match as the config would write it (sets sorted)."""
        shown: dict[str, Any] = {}
        if self.classes is not None:
            shown["class"] = sorted(self.classes)
        if self.sender_domains is not None:
            shown["sender_domain"] = list(self.sender_domains.patterns)
        if self.recipient_domains is not None:
            shown["recipient_domain"] = list(self.recipient_domains.patterns)
        if self.tags is not None:
            shown["tags"] = sorted(self.tags)
        if self.clients is not None:
            shown["client"] = sorted(self.clients)
        return shown


@dataclass(frozen=True, slots=True)
class SetClass:
    traffic_class: str


@dataclass(frozen=True, slots=True)
class UseVendors:
    vendors: frozenset[str]


@dataclass(frozen=True, slots=True)
class UseWeights:
    weights: Mapping[str, float]


Action = SetClass | UseVendors | UseWeights


def action_json(action: Action) -> dict[str, Any]:
    if isinstance(action, SetClass):
        return {"class": action.traffic_class}
    if isinstance(action, UseVendors):
        return {"vendors": sorted(action.vendors)}
    return {"weights": dict(action.weights)}


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of `rules:`; `index` is its place in the list (rules[index])."""

    index: int
    match: Match
    action: Action

    @classmethod
    def from_config(cls, index: int, rule: RuleConfig) -> Rule:
        action: Action
        if rule.traffic_class is not None:
            action = SetClass(rule.traffic_class)
        elif rule.vendors is not None:
            action = UseVendors(frozenset(rule.vendors))
        elif rule.weights is not None:
            action = UseWeights(MappingProxyType({k: float(v) for k, v in rule.weights.items()}))
        else:  # RuleConfig demands exactly one action
            raise ValueError(f"rules[{index}] has no action")
        return cls(index, Match.from_config(rule.match), action)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "match": self.match.to_json(), **action_json(self.action)}


@dataclass(frozen=True, slots=True)
class Rules:
    """The rules of one config, split by pass (each part in list order)."""

    class_rules: tuple[Rule, ...] = ()
    route_rules: tuple[Rule, ...] = ()
    asks: Asks = Asks()

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> Rules:
        listed = tuple(rules)
        return cls(
            class_rules=tuple(r for r in listed if isinstance(r.action, SetClass)),
            route_rules=tuple(r for r in listed if not isinstance(r.action, SetClass)),
            asks=Asks.of(r.match for r in listed),
        )

    @classmethod
    def build(cls, rules: Sequence[RuleConfig]) -> Rules:
        return cls.of(Rule.from_config(i, r) for i, r in enumerate(rules))

    @classmethod
    def from_config(cls, config: Config) -> Rules:
        return cls.build(config.rules)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules made of one message."""

    traffic_class: TrafficClass
    class_rule: Rule | None = None  # the rule that set the class; None: the message's own
    route_rule: Rule | None = None  # the rule that chose vendors or weights; None: no rule


def decide(message: Message, client: str | None, rules: Rules, book: ClassBook) -> Decision:
    """Resolve `message`'s class and pick the rule that shapes its plan (module docstring)."""
    cls = book.get(message.traffic_class)
    if not (rules.class_rules or rules.route_rules):
        return Decision(cls)
    facts = Facts(message, client, rules.asks)
    class_rule = None
    for rule in rules.class_rules:
        action = rule.action
        if isinstance(action, SetClass) and rule.match.holds(cls.name, facts):
            class_rule = rule
            cls = book.get(action.traffic_class)
            break
    for rule in rules.route_rules:
        if rule.match.holds(cls.name, facts):
            return Decision(cls, class_rule, rule)
    return Decision(cls, class_rule)


def _narrowed(
    routes: tuple[Route, ...],
    vendors: frozenset[str] | None,
    weights: Mapping[str, float] | None,
) -> tuple[Route, ...]:
    if vendors is not None:
        routes = tuple(r for r in routes if r.vendor in vendors)
    if weights is not None:
        routes = tuple(
            Route(r.vendor, weights.get(r.vendor, 0.0), r.fallback, r.drained) for r in routes
        )
    return routes


def class_routes(
    routes: Sequence[Route], cls: TrafficClass, rule: Rule | None
) -> tuple[Route, ...]:
    """The config's `routes` as `cls` allows them, then as `rule` (a vendor rule) narrows them.

    A vendor outside an allowed set is removed entirely; `weights` replace the
    weights, and a vendor they do not name gets weight 0 and keeps its
    configured `fallback`. Overrides are layered over the result afterwards
    (`overrides.effective_routes`), so an operator's drain still wins.
    """
    narrowed = _narrowed(tuple(routes), cls.vendors, cls.weights)
    if rule is None:
        return narrowed
    action = rule.action
    if isinstance(action, UseVendors):
        return _narrowed(narrowed, action.vendors, None)
    if isinstance(action, UseWeights):
        return _narrowed(narrowed, None, action.weights)
    return narrowed


def routable(routes: Sequence[Route]) -> bool:
    """Whether a plan over `routes` could hold any vendor (one with weight > 0 or a fallback)."""
    return any(r.weight > 0 or r.fallback for r in routes if not r.drained)
