"""Traffic classes: what a message's class promises about its delivery.

An OTP code that arrives late is as bad as one never sent; a newsletter can
wait out an outage. A traffic class says how long a message of that class may
take (`deadline`, counted from when mailmux received it), how long one
attempt may take, how many attempts it gets, how urgent it is against other
classes (`priority`, higher first), which vendors may carry it or with which
weights, what an ambiguous outcome means for it, and whether it is hedged.

Three classes are built in: `otp` (priority 100, deadline 60 s, attempts of
5 s), `transactional` (the default class, priority 50, no deadline of its
own: `retry.max_age` bounds it) and `bulk` (priority 10, never hedged).
`classes:` in the config re-configures them field by field and adds classes
of its own; a class it adds takes the default class's settings for the
fields it leaves out. A message naming a class the book does not know is
routed as the default class: a caller's typo must not lose mail.

The ambiguous policy used to be set per class name in `delivery.ambiguous`;
that key still works: a class without its own `ambiguous` takes
`delivery.ambiguous[<class>]`, else `delivery.ambiguous.default`, else
`resend`, and a name that only `delivery.ambiguous` lists is a class of its
own (the default class's settings, that policy), as it was before classes.

Pure: `ClassBook` is built once per config and only read afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from mailmux.message import DEFAULT_TRAFFIC_CLASS

if TYPE_CHECKING:
    from mailmux.config import Config
    from mailmux.config_classes import ClassConfig

#: The key of `delivery.ambiguous` that covers every class it does not name.
DEFAULT_POLICY_KEY = "default"
#: Classes that are never hedged: a second copy of bulk mail is never worth its cost.
NEVER_HEDGED = frozenset({"bulk"})


class AmbiguousPolicy(StrEnum):
    """What to do when a request reached a vendor but its answer was lost."""

    RESEND = "resend"  # try the next vendor: never loses mail, may duplicate it
    ASSUME_SENT = "assume_sent"  # count it as sent: never duplicates, may lose it


HedgeAfter = float | Literal["p90"]


@dataclass(frozen=True, slots=True)
class TrafficClass:
    """One class, every field resolved (None means the class sets no bound of its own)."""

    name: str
    priority: int  # higher is more urgent
    deadline: float | None = None  # seconds after receipt; None: retry.max_age
    attempt_timeout: float | None = None  # None: the vendor's, else delivery.attempt_timeout
    max_attempts: int | None = None  # None: until the deadline
    vendors: frozenset[str] | None = None  # None: every vendor; else only these
    weights: Mapping[str, float] | None = None  # None: the vendors' weights; else these
    ambiguous: AmbiguousPolicy = AmbiguousPolicy.RESEND
    hedge_after: HedgeAfter | None = None  # None: not hedged; "p90": the first vendor's p90


BUILT_IN: Mapping[str, TrafficClass] = MappingProxyType(
    {
        "otp": TrafficClass("otp", priority=100, deadline=60.0, attempt_timeout=5.0),
        DEFAULT_TRAFFIC_CLASS: TrafficClass(DEFAULT_TRAFFIC_CLASS, priority=50),
        "bulk": TrafficClass("bulk", priority=10),
    }
)


def ambiguous_policy(
    name: str, own: str | None, delivery_ambiguous: Mapping[str, str]
) -> tuple[AmbiguousPolicy, str]:
    """A class's ambiguous policy and the setting it came from (for error messages)."""
    if own is not None:
        return AmbiguousPolicy(own), f"classes.{name}.ambiguous"
    for key in (name, DEFAULT_POLICY_KEY):
        if key in delivery_ambiguous:
            return AmbiguousPolicy(delivery_ambiguous[key]), f"delivery.ambiguous.{key}"
    return AmbiguousPolicy.RESEND, "the default"


def build_class(
    name: str, settings: ClassConfig | None, delivery_ambiguous: Mapping[str, str]
) -> TrafficClass:
    """`name` as configured: its built-in (or the default class) with `settings` over it."""
    base = BUILT_IN.get(name) or replace(BUILT_IN[DEFAULT_TRAFFIC_CLASS], name=name)
    own = None if settings is None else settings.ambiguous
    policy, _ = ambiguous_policy(name, own, delivery_ambiguous)
    if settings is None:
        return replace(base, ambiguous=policy)
    return TrafficClass(
        name=name,
        priority=base.priority if settings.priority is None else settings.priority,
        deadline=base.deadline if settings.deadline is None else settings.deadline,
        attempt_timeout=(
            base.attempt_timeout if settings.attempt_timeout is None else settings.attempt_timeout
        ),
        max_attempts=base.max_attempts if settings.max_attempts is None else settings.max_attempts,
        vendors=base.vendors if settings.vendors is None else frozenset(settings.vendors),
        weights=(
            base.weights
            if settings.weights is None
            else MappingProxyType({k: float(v) for k, v in settings.weights.items()})
        ),
        ambiguous=policy,
        hedge_after=base.hedge_after if settings.hedge_after is None else settings.hedge_after,
    )


def class_names(
    configured: Mapping[str, object], delivery_ambiguous: Mapping[str, str]
) -> tuple[str, ...]:
    """Every class a config has: built-ins, `classes:`, and names only `delivery.ambiguous` has."""
    names = dict.fromkeys([*BUILT_IN, *configured])
    names.update(dict.fromkeys(k for k in delivery_ambiguous if k != DEFAULT_POLICY_KEY))
    return tuple(names)


class ClassBook:
    """The traffic classes of one config; iterates in priority order (most urgent first)."""

    __slots__ = ("_by_name", "_default", "_ordered")

    def __init__(self, classes: Mapping[str, TrafficClass]) -> None:
        if DEFAULT_TRAFFIC_CLASS not in classes:
            raise ValueError(f"a class book needs the default class {DEFAULT_TRAFFIC_CLASS!r}")
        self._by_name = dict(classes)
        self._default = classes[DEFAULT_TRAFFIC_CLASS]
        self._ordered = tuple(sorted(classes.values(), key=lambda c: (-c.priority, c.name)))

    @classmethod
    def build(
        cls, configured: Mapping[str, ClassConfig], delivery_ambiguous: Mapping[str, str]
    ) -> ClassBook:
        return cls(
            {
                name: build_class(name, configured.get(name), delivery_ambiguous)
                for name in class_names(configured, delivery_ambiguous)
            }
        )

    @classmethod
    def from_config(cls, config: Config) -> ClassBook:
        return cls.build(config.classes, config.delivery.ambiguous)

    @property
    def default(self) -> TrafficClass:
        return self._default

    @property
    def lowest_priority(self) -> int:
        """The least urgent class's priority: the Retrier's reserved slots take mail above
        it, and only first attempts above it may take a rate limit's urgent reserve."""
        return self._ordered[-1].priority

    def get(self, name: str) -> TrafficClass:
        """The class called `name`; the default class for a name the book does not know."""
        return self._by_name.get(name, self._default)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[TrafficClass]:
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)


def effective_deadline(
    cls: TrafficClass, message_deadline: float | None, received_at: float
) -> float | None:
    """The instant a message must be delivered by: the earlier of its own deadline and
    its class's (`received_at` + the class deadline); None when neither sets one."""
    if cls.deadline is None:
        return message_deadline
    by_class = received_at + cls.deadline
    return by_class if message_deadline is None else min(by_class, message_deadline)
