"""The `classes:` and `rules:` sections: traffic classes and routing rules.

The models check each value on its own; `problems` checks what needs the
whole configuration (vendor, class and client names; whether a class or a
rule leaves any vendor to route to; where hedging is allowed) and is run by
`Config` once every section is valid. It plans with the same functions the
router uses (`mailmux.rules.class_routes`), so a rule the config accepts is
a rule that routes. What the settings mean at run time is told in
`mailmux.classes` and `mailmux.rules`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from mailmux.classes import (
    DEFAULT_POLICY_KEY,
    NEVER_HEDGED,
    AmbiguousPolicy,
    ClassBook,
    TrafficClass,
    ambiguous_policy,
)
from mailmux.config_sources import Violations, show_value
from mailmux.config_values import (
    AmbiguousPolicyName,
    ClassName,
    ClientName,
    Count,
    Finite,
    Seconds,
    Text,
    VendorName,
    finite_number,
    one_of,
    whole_number,
)
from mailmux.routing import Route
from mailmux.rules import Rule, class_routes, routable

if TYPE_CHECKING:
    from mailmux.config import Config

_LABEL = r"[^\s@.*,/\\:;]+"  # a domain label: IDN letters allowed, no separators or wildcards
_DOMAIN = re.compile(rf"(\*\.)?({_LABEL}\.)*{_LABEL}")


def _one_or_list(value: object) -> object:
    """One value where a list is expected is a list of one; an empty list matches nothing."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and not value:
        raise ValueError("must not be empty (leave the key out to match every value)")
    return value


def _domain_pattern(value: object) -> object:
    """`example.com` or `*.example.com`, lower-cased, punycode labels in Unicode form (as a
    message's normalized addresses have them)."""
    if not isinstance(value, str):
        return value  # pydantic says it must be a string
    text = value.strip().lower().rstrip(".")
    if "@" in text:
        raise ValueError(f"must be a domain such as example.com, not an address (got {value!r})")
    if _DOMAIN.fullmatch(text) is None:
        raise ValueError(f"must be a domain such as example.com or *.example.com (got {value!r})")
    wild = text.startswith("*.")
    name = text[2:] if wild else text
    if "xn--" in name:
        try:
            name = name.encode("ascii").decode("idna")
        except UnicodeError:
            raise ValueError(f"not a valid IDN domain (got {value!r})") from None
    return ("*." if wild else "") + name


def _vendor_list(value: object) -> object:
    if isinstance(value, list | tuple) and not value:
        raise ValueError("must name at least one vendor")
    return value


def _weight_map(value: object) -> object:
    if isinstance(value, dict) and not value:
        raise ValueError("must name at least one vendor")
    return value


def _hedge_delay(value: object) -> object:
    """Seconds above 0, or `p90`: the first vendor's recent 90th percentile latency."""
    if value == "p90":
        return value
    finite_number(value)  # booleans, NaN and infinity, in the common words
    try:
        seconds = float(value) if isinstance(value, str | int | float) else None
    except ValueError:
        seconds = None
    if seconds is None or not seconds > 0:
        raise ValueError(f"must be a number of seconds above 0, or p90 (got {show_value(value)})")
    return value


_Listed = BeforeValidator(_one_or_list)
Domain = Annotated[str, BeforeValidator(_domain_pattern)]
Weight = Annotated[float, Finite, Field(ge=0)]
Vendors = Annotated[tuple[VendorName, ...], BeforeValidator(_vendor_list)]
Weights = Annotated[Mapping[VendorName, Weight], BeforeValidator(_weight_map)]
Priority = Annotated[int, BeforeValidator(whole_number)]
Policy = Annotated[AmbiguousPolicyName, one_of(get_args(AmbiguousPolicyName))]
HedgeAfter = Annotated[float | Literal["p90"], BeforeValidator(_hedge_delay)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClassConfig(_Section):
    """One traffic class; a field left out keeps the built-in's value (or the default class's)."""

    priority: Priority | None = None  # higher is more urgent
    deadline: Seconds | None = None  # seconds after receipt; a message's own may be sooner
    attempt_timeout: Seconds | None = None
    max_attempts: Count | None = None
    vendors: Vendors | None = None  # only these vendors carry the class
    weights: Weights | None = None  # these weights; vendors not named: weight 0, fallbacks
    ambiguous: Policy | None = None  # default: delivery.ambiguous (the old key), else resend
    hedge_after: HedgeAfter | None = None  # seconds, or p90 of the first vendor's latency

    @model_validator(mode="after")
    def _weights_within_vendors(self) -> ClassConfig:
        if self.vendors is not None and self.weights is not None:
            outside = [v for v in self.weights if v not in self.vendors]
            if outside:
                raise Violations(
                    *(
                        (f"weights.{v}", "not one of this class's vendors, so never used")
                        for v in outside
                    )
                )
        return self


class MatchConfig(_Section):
    """What a rule matches; every field given must hold. Each takes one value or a list."""

    traffic_class: Annotated[tuple[ClassName, ...], _Listed] | None = Field(None, alias="class")
    sender_domain: Annotated[tuple[Domain, ...], _Listed] | None = None
    recipient_domain: Annotated[tuple[Domain, ...], _Listed] | None = None
    tags: Annotated[tuple[Text, ...], _Listed] | None = None
    client: Annotated[tuple[ClientName, ...], _Listed] | None = None


class RuleConfig(_Section):
    """One routing rule: a match and exactly one of vendors, weights or class."""

    match: MatchConfig = Field(default_factory=lambda: MatchConfig.model_validate({}))
    vendors: Vendors | None = None
    weights: Weights | None = None
    traffic_class: ClassName | None = Field(None, alias="class")

    @model_validator(mode="after")
    def _one_action(self) -> RuleConfig:
        given = [
            key
            for key, value in (
                ("vendors", self.vendors),
                ("weights", self.weights),
                ("class", self.traffic_class),
            )
            if value is not None
        ]
        if len(given) != 1:
            got = f"got {' and '.join(given)}" if given else "got none"
            raise ValueError(f"needs exactly one of vendors, weights or class ({got})")
        return self


# ---------------------------------------------------------------- checks across sections


def problems(config: Config) -> list[tuple[str, str]]:
    """Every rule break of `classes:` and `rules:` against the rest of `config`, as
    (dotted path, message); [] when they fit."""
    found: list[tuple[str, str]] = []
    vendors = set(config.vendors)
    routes = tuple(
        Route(vendor=name, weight=float(v.weight), fallback=v.fallback)
        for name, v in config.vendors.items()
    )
    ambiguous = config.delivery.ambiguous
    if DEFAULT_POLICY_KEY in config.classes:
        found.append(
            (
                f"classes.{DEFAULT_POLICY_KEY}",
                "reserved: delivery.ambiguous.default covers every class it does not name",
            )
        )
    book = ClassBook.build(config.classes, ambiguous)
    for name, settings in config.classes.items():
        at = f"classes.{name}"
        unknown = _unknown_vendors(at, settings.vendors, settings.weights, vendors)
        found += unknown
        cls = book.get(name)
        allowed = class_routes(routes, cls, None)
        if not unknown and not routable(allowed):
            setting = "vendors" if settings.weights is None else "weights"
            found.append((f"{at}.{setting}", f"leaves no vendor to route to ({_shown(allowed)})"))
        found += _hedging(at, name, settings, ambiguous)
        lease = config.retry.lease_seconds
        if settings.attempt_timeout is not None and settings.attempt_timeout >= lease:
            found.append(
                (
                    f"{at}.attempt_timeout",
                    f"must be < retry.lease_seconds ({show_value(lease)}), or a lease can run "
                    f"out during an attempt (got {show_value(settings.attempt_timeout)})",
                )
            )
    clients = set(config.clients)
    for index, rule in enumerate(config.rules):
        found += _rule_problems(index, rule, book, routes, vendors, clients)
    return found


def _unknown_vendors(
    at: str,
    listed: tuple[str, ...] | None,
    weights: Mapping[str, float] | None,
    vendors: set[str],
) -> list[tuple[str, str]]:
    known = ", ".join(sorted(vendors))
    found = [
        (f"{at}.vendors[{i}]", f"unknown vendor {name!r} (configured: {known})")
        for i, name in enumerate(listed or ())
        if name not in vendors
    ]
    found += [
        (f"{at}.weights.{name}", f"unknown vendor (configured: {known})")
        for name in weights or {}
        if name not in vendors
    ]
    return found


def _hedging(
    at: str, name: str, settings: ClassConfig, ambiguous: Mapping[str, str]
) -> list[tuple[str, str]]:
    if settings.hedge_after is None:
        return []
    if name in NEVER_HEDGED:
        return [(f"{at}.hedge_after", f"not allowed for {name}: bulk mail is never hedged")]
    policy, source = ambiguous_policy(name, settings.ambiguous, ambiguous)
    if policy is AmbiguousPolicy.ASSUME_SENT:
        return [
            (
                f"{at}.hedge_after",
                f"not allowed with ambiguous policy assume_sent (from {source}): a hedge "
                "resends while the first attempt's outcome is open, which assume_sent forbids",
            )
        ]
    return []


def _rule_problems(
    index: int,
    rule: RuleConfig,
    book: ClassBook,
    routes: tuple[Route, ...],
    vendors: set[str],
    clients: set[str],
) -> list[tuple[str, str]]:
    at = f"rules[{index}]"
    names = ", ".join(c.name for c in book)
    found = [
        (f"{at}.match.class", f"unknown traffic class {name!r} (known: {names})")
        for name in rule.match.traffic_class or ()
        if name not in book
    ]
    found += [
        (
            f"{at}.match.client",
            f"unknown client {name!r} "
            + (f"(configured: {', '.join(sorted(clients))})" if clients else "(none configured)"),
        )
        for name in rule.match.client or ()
        if name not in clients
    ]
    if rule.traffic_class is not None and rule.traffic_class not in book:
        found.append(
            (f"{at}.class", f"unknown traffic class {rule.traffic_class!r} (known: {names})")
        )
    unknown = _unknown_vendors(at, rule.vendors, rule.weights, vendors)
    found += unknown
    if rule.traffic_class is None and not unknown:
        compiled = Rule.from_config(index, rule)
        applies: list[TrafficClass] = (
            list(book)
            if rule.match.traffic_class is None
            else [book.get(n) for n in rule.match.traffic_class if n in book]
        )
        setting = "vendors" if rule.vendors is not None else "weights"
        for cls in applies:
            left = class_routes(routes, cls, compiled)
            if not routable(left):
                found.append(
                    (
                        f"{at}.{setting}",
                        f"leaves no vendor to route to for class {cls.name} "
                        f"({_shown(class_routes(routes, cls, None))})",
                    )
                )
    return found


def _shown(routes: tuple[Route, ...]) -> str:
    """The vendors a class leaves, as `a 70, b 0 (no fallback)`; `none` when it leaves none."""
    parts = [f"{r.vendor} {r.weight:g}" + ("" if r.fallback else " (no fallback)") for r in routes]
    return "the class allows " + (", ".join(parts) if parts else "none")
