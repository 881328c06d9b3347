"""Routing rules: matching, the two passes and their precedence, class resolution,
class_routes under overrides, and every rejection of `rules:` with its path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailmux.classes import ClassBook
from mailmux.config import Config, ConfigError, load_config
from mailmux.message import Address, Message
from mailmux.overrides import Override, OverrideKind, effective_routes
from mailmux.routing import Route
from mailmux.rules import Decision, Rules, class_routes, decide

VENDORS = {
    "a": {"kind": "sandbox", "weight": 70},
    "b": {"kind": "sandbox", "weight": 30},
    "c": {"kind": "sandbox", "weight": 0},  # a fallback only
    "d": {"kind": "sandbox", "weight": 0, "fallback": False},
}
ROUTES = (Route("a", 70.0), Route("b", 30.0), Route("c", 0.0), Route("d", 0.0, fallback=False))


def setup(rules: list[dict[str, Any]], **sections: Any) -> tuple[Rules, ClassBook]:
    config = Config.model_validate(
        {"vendors": VENDORS, "clients": {"shop": {"key": "k1"}}, "rules": rules, **sections}
    )
    return Rules.from_config(config), ClassBook.from_config(config)


def message(
    sender: str = "app@example.com",
    to: tuple[str, ...] = ("someone@example.org",),
    *,
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    traffic_class: str = "transactional",
    client: str | None = None,
) -> Message:
    return Message(
        Address(sender),
        tuple(map(Address, to)),
        tuple(map(Address, cc)),
        tuple(map(Address, bcc)),
        tags=tags,
        traffic_class=traffic_class,
        client=client,
    )


def decided(rules: list[dict[str, Any]], msg: Message, **sections: Any) -> Decision:
    compiled, book = setup(rules, **sections)
    return decide(msg, msg.client, compiled, book)


def route_index(rules: list[dict[str, Any]], msg: Message) -> int | None:
    rule = decided(rules, msg).route_rule
    return None if rule is None else rule.index


def errors(tmp_path: Path, rules: list[dict[str, Any]], **sections: Any) -> list[str]:
    path = tmp_path / "mailmux.yaml"
    data = {"vendors": VENDORS, "clients": {"shop": {"key": "k1"}}, "rules": rules, **sections}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return caught.value.errors


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("pattern", "domain", "holds"),
    [
        ("gmail.com", "gmail.com", True),
        ("gmail.com", "mail.gmail.com", False),  # the domain only, not its subdomains
        ("*.example.com", "eu.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),  # subdomains only
        ("*.example.com", "badexample.com", False),
        ("GMail.COM", "gmail.com", True),  # case-insensitive both ways
        ("gmail.com", "GMAIL.com", True),
        ("xn--bcher-kva.example", "bücher.example", True),  # punycode matches the Unicode form
    ],
)
def test_recipient_domain_patterns(pattern: str, domain: str, holds: bool) -> None:
    rules = [{"match": {"recipient_domain": [pattern]}, "vendors": ["a"]}]

    assert (route_index(rules, message(to=(f"x@{domain}",))) == 0) is holds


def test_a_recipient_rule_matches_when_any_of_to_cc_bcc_is_at_the_domain() -> None:
    rules = [{"match": {"recipient_domain": "gmail.com"}, "vendors": ["a"]}]

    assert route_index(rules, message(to=("x@example.org", "y@gmail.com"))) == 0
    assert route_index(rules, message(cc=("y@gmail.com",))) == 0
    assert route_index(rules, message(bcc=("y@gmail.com",))) == 0
    assert route_index(rules, message(to=("x@example.org",), cc=("z@yahoo.com",))) is None


def test_sender_domain() -> None:
    rules = [{"match": {"sender_domain": ["*.news.example.com", "shop.example"]}, "vendors": ["b"]}]

    assert route_index(rules, message("n@weekly.news.example.com")) == 0
    assert route_index(rules, message("n@Shop.Example")) == 0
    assert route_index(rules, message("n@news.example.com")) is None
    assert route_index(rules, message("n@example.org", to=("x@shop.example",))) is None


def test_tags_match_when_the_message_has_any_of_them() -> None:
    rules = [{"match": {"tags": ["reset", "login"]}, "vendors": ["a"]}]

    assert route_index(rules, message(tags=("welcome", "login"))) == 0
    assert route_index(rules, message(tags=("welcome",))) is None
    assert route_index(rules, message()) is None


def test_client_and_class_take_one_name_or_a_list() -> None:
    rules = [
        {"match": {"client": "shop"}, "vendors": ["a"]},
        {"match": {"class": ["bulk", "otp"]}, "vendors": ["b"]},
    ]

    assert route_index(rules, message(client="shop")) == 0
    assert route_index(rules, message(client="other", traffic_class="bulk")) == 1
    assert route_index(rules, message(traffic_class="otp")) == 1
    assert route_index(rules, message()) is None


def test_every_field_of_a_match_must_hold() -> None:
    rules = [
        {
            "match": {
                "class": "bulk",
                "sender_domain": "news.example",
                "recipient_domain": "gmail.com",
                "tags": ["digest"],
                "client": "shop",
            },
            "vendors": ["b"],
        }
    ]
    everything = {
        "sender": "n@news.example",
        "to": ("x@gmail.com",),
        "tags": ("digest",),
        "traffic_class": "bulk",
        "client": "shop",
    }
    assert route_index(rules, message(**everything)) == 0
    for field, other in (
        ("sender", "n@other.example"),
        ("to", ("x@yahoo.com",)),
        ("tags", ("other",)),
        ("traffic_class", "transactional"),
        ("client", None),
    ):
        assert route_index(rules, message(**{**everything, field: other})) is None, field


def test_an_empty_match_holds_for_every_message() -> None:
    rules = [{"vendors": ["a"]}, {"match": {}, "vendors": ["b"]}]

    assert route_index(rules, message()) == 0


# ---------------------------------------------------------------- passes, precedence, classes


def test_without_rules_the_message_keeps_its_class() -> None:
    decision = decided([], message(traffic_class="otp"))

    assert (decision.traffic_class.name, decision.class_rule, decision.route_rule) == (
        "otp",
        None,
        None,
    )


def test_an_unknown_message_class_is_the_default_class_and_matches_as_it() -> None:
    rules = [{"match": {"class": "transactional"}, "vendors": ["a"]}]

    decision = decided(rules, message(traffic_class="newsletter"))
    assert decision.traffic_class.name == "transactional"
    assert decision.route_rule is not None and decision.route_rule.index == 0


def test_the_first_matching_class_rule_sets_the_class() -> None:
    rules = [
        {"match": {"tags": ["other"]}, "class": "bulk"},
        {"match": {"tags": ["reset"]}, "class": "otp"},
        {"match": {"tags": ["reset"]}, "class": "bulk"},
    ]

    decision = decided(rules, message(tags=("reset",)))
    assert decision.traffic_class.name == "otp"
    assert decision.class_rule is not None and decision.class_rule.index == 1
    assert decision.route_rule is None


def test_class_rules_match_the_message_own_class_and_do_not_chain() -> None:
    rules = [
        {"match": {"class": "transactional"}, "class": "bulk"},
        {"match": {"class": "bulk"}, "class": "otp"},  # matches only a message sent as bulk
    ]

    assert decided(rules, message()).traffic_class.name == "bulk"
    assert decided(rules, message(traffic_class="bulk")).traffic_class.name == "otp"


def test_vendor_rules_match_the_resolved_class_wherever_the_class_rule_is() -> None:
    rules = [
        {"match": {"class": "otp"}, "vendors": ["a"]},  # before the class rule in the list
        {"match": {"class": "transactional"}, "vendors": ["b"]},
        {"match": {"tags": ["reset"]}, "class": "otp"},
    ]

    decision = decided(rules, message(tags=("reset",)))
    assert decision.traffic_class.name == "otp"
    assert decision.class_rule is not None and decision.class_rule.index == 2
    assert decision.route_rule is not None and decision.route_rule.index == 0
    # without the tag, the message's own class picks rule 1
    assert route_index(rules, message()) == 1


def test_the_first_matching_vendor_rule_wins() -> None:
    rules = [
        {"match": {"recipient_domain": "yahoo.com"}, "vendors": ["a"]},
        {"match": {"recipient_domain": "gmail.com"}, "weights": {"b": 1}},
        {"match": {"recipient_domain": "gmail.com"}, "vendors": ["a"]},
    ]

    assert route_index(rules, message(to=("x@gmail.com",))) == 1


def test_a_rule_shows_as_it_was_configured() -> None:
    rules = [{"match": {"recipient_domain": ["Gmail.com", "*.Example.com"]}, "vendors": ["b", "a"]}]

    rule = decided(rules, message(to=("x@gmail.com",))).route_rule
    assert rule is not None
    assert rule.to_json() == {
        "index": 0,
        "match": {"recipient_domain": ["gmail.com", "*.example.com"]},
        "vendors": ["a", "b"],
    }


# ---------------------------------------------------------------- class_routes


def routes_for(rules: list[dict[str, Any]], msg: Message, **sections: Any) -> tuple[Route, ...]:
    decision = decided(rules, msg, **sections)
    return class_routes(ROUTES, decision.traffic_class, decision.route_rule)


def test_no_class_setting_and_no_rule_leaves_the_routes_as_configured() -> None:
    assert routes_for([], message()) == ROUTES


def test_class_vendors_remove_the_others_entirely() -> None:
    routes = routes_for([], message(traffic_class="otp"), classes={"otp": {"vendors": ["b", "c"]}})

    assert routes == (Route("b", 30.0), Route("c", 0.0))


def test_class_weights_replace_weights_and_the_others_stay_fallbacks_as_configured() -> None:
    routes = routes_for([], message(traffic_class="bulk"), classes={"bulk": {"weights": {"c": 5}}})

    assert routes == (
        Route("a", 0.0),
        Route("b", 0.0),
        Route("c", 5.0),
        Route("d", 0.0, fallback=False),
    )


def test_a_rule_narrows_within_the_class_vendors() -> None:
    rules = [{"match": {"recipient_domain": "gmail.com"}, "vendors": ["a", "c"]}]
    otp = {"otp": {"vendors": ["a", "b"]}}

    routes = routes_for(rules, message(to=("x@gmail.com",), traffic_class="otp"), classes=otp)
    assert routes == (Route("a", 70.0),)  # c is not one of otp's vendors


def test_rule_weights_apply_over_class_weights() -> None:
    rules = [{"match": {"client": "shop"}, "weights": {"b": 2}}]
    bulk = {"bulk": {"weights": {"a": 1, "c": 1}}}

    routes = routes_for(rules, message(client="shop", traffic_class="bulk"), classes=bulk)
    assert [(r.vendor, r.weight) for r in routes] == [("a", 0), ("b", 2), ("c", 0), ("d", 0)]


def test_an_operator_drain_layered_after_still_wins_over_a_rule() -> None:
    rules = [{"match": {"recipient_domain": "gmail.com"}, "weights": {"a": 100}}]
    narrowed = routes_for(rules, message(to=("x@gmail.com",)))
    drain = Override(OverrideKind.DRAIN, "a", hard=True)

    routes = effective_routes(narrowed, [drain], now=0.0)
    assert [(r.vendor, r.weight, r.drained) for r in routes][:2] == [
        ("a", 0.0, True),
        ("b", 0.0, False),
    ]


# ---------------------------------------------------------------- rejections


def test_a_rule_naming_an_unknown_vendor(tmp_path: Path) -> None:
    assert errors(
        tmp_path,
        [{"vendors": ["a", "zz"]}, {"weights": {"yy": 1}}],
    ) == [
        "rules[0].vendors[1]: unknown vendor 'zz' (configured: a, b, c, d)",
        "rules[1].weights.yy: unknown vendor (configured: a, b, c, d)",
    ]


def test_a_rule_naming_an_unknown_class(tmp_path: Path) -> None:
    assert errors(
        tmp_path,
        [{"match": {"class": ["otp", "promo"]}, "vendors": ["a"]}, {"class": "promo"}],
    ) == [
        "rules[0].match.class: unknown traffic class 'promo' (known: otp, transactional, bulk)",
        "rules[1].class: unknown traffic class 'promo' (known: otp, transactional, bulk)",
    ]


def test_a_class_the_config_adds_is_known_to_rules() -> None:
    rules, book = setup([{"match": {"tags": "x"}, "class": "promo"}], classes={"promo": {}})

    assert decide(message(tags=("x",)), None, rules, book).traffic_class.name == "promo"


def test_a_rule_naming_an_unknown_client(tmp_path: Path) -> None:
    assert errors(tmp_path, [{"match": {"client": ["shop", "shopp"]}, "vendors": ["a"]}]) == [
        "rules[0].match.client: unknown client 'shopp' (configured: shop)"
    ]


@pytest.mark.parametrize(
    ("rule", "got"),
    [
        ({"match": {"tags": "x"}}, "got none"),
        ({"vendors": ["a"], "class": "otp"}, "got vendors and class"),
        ({"vendors": ["a"], "weights": {"a": 1}}, "got vendors and weights"),
    ],
)
def test_a_rule_has_exactly_one_action(tmp_path: Path, rule: dict[str, Any], got: str) -> None:
    assert errors(tmp_path, [rule]) == [
        f"rules[0]: needs exactly one of vendors, weights or class ({got})"
    ]


def test_a_rule_that_leaves_no_vendor_for_a_class_it_applies_to(tmp_path: Path) -> None:
    otp_on_a = {"otp": {"vendors": ["a"]}}

    assert errors(tmp_path, [{"vendors": ["b"]}], classes=otp_on_a) == [
        "rules[0].vendors: leaves no vendor to route to for class otp (the class allows a 70)"
    ]
    # limited to the classes the rule can apply to, it is fine
    setup([{"match": {"class": ["transactional", "bulk"]}, "vendors": ["b"]}], classes=otp_on_a)
    # a weight-0 vendor that is not a fallback leaves nothing either
    assert errors(tmp_path, [{"match": {"class": "bulk"}, "vendors": ["d"]}]) == [
        "rules[0].vendors: leaves no vendor to route to for class bulk "
        "(the class allows a 70, b 30, c 0, d 0 (no fallback))"
    ]


def test_rule_weights_of_zero_still_leave_the_fallbacks() -> None:
    rules, _ = setup([{"weights": {"d": 0}}])  # a, b and c stay fallbacks

    assert dict(rules.route_rules[0].action.weights) == {"d": 0.0}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("match", "line"),
    [
        ({"recipient_domain": []}, "rules[0].match.recipient_domain: must not be empty"),
        (
            {"sender_domain": ["x@example.com"]},
            "rules[0].match.sender_domain[0]: must be a domain such as example.com, not an address",
        ),
        (
            {"recipient_domain": ["*example.com"]},
            "rules[0].match.recipient_domain[0]: must be a domain such as example.com or "
            "*.example.com",
        ),
        ({"recipient_domain": ["a..b"]}, "rules[0].match.recipient_domain[0]: must be a domain"),
        ({"tags": [""]}, "rules[0].match.tags[0]: must not be empty"),
        ({"clas": "otp"}, "rules[0].match.clas: unknown key (did you mean class?)"),
    ],
)
def test_match_values_are_checked_with_their_paths(
    tmp_path: Path, match: dict[str, Any], line: str
) -> None:
    (error,) = errors(tmp_path, [{"match": match, "vendors": ["a"]}])
    assert error.startswith(line)


def test_rule_values_are_checked_with_their_paths(tmp_path: Path) -> None:
    assert errors(tmp_path, [{"vendors": []}, {"weights": {"a": -1}}, {"vendor": ["a"]}]) == [
        "rules[0].vendors: must name at least one vendor",
        "rules[1].weights.a: must be ≥ 0 (got -1)",
        "rules[2].vendor: unknown key (did you mean vendors?)",
    ]


# ---------------------------------------------------------------- cost


def test_decide_stays_cheap_with_20_rules() -> None:
    """decide runs per message: with 20 domain rules and the last one matching, a
    message costs microseconds (typically ≈ 5-10 µs here); the bound only catches an
    order-of-magnitude regression, not noise."""
    rules = [
        {"match": {"recipient_domain": [f"d{i}.example", f"*.e{i}.example"]}, "vendors": ["a"]}
        for i in range(19)
    ] + [{"match": {"client": "shop"}, "weights": {"b": 1}}]
    compiled, book = setup(rules)
    msg = message(to=("x@gmail.com", "y@a.b.example"), client="shop")
    assert decide(msg, "shop", compiled, book).route_rule is not None

    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(2000):
            decide(msg, "shop", compiled, book)
        best = min(best, (time.perf_counter() - start) / 2000)
    assert best < 100e-6
