"""Traffic classes: built-ins, the config's classes over them, the old ambiguous key,
deadlines, and every rejection of `classes:` with its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from mailmux import delivery
from mailmux.classes import (
    BUILT_IN,
    AmbiguousPolicy,
    ClassBook,
    TrafficClass,
    effective_deadline,
)
from mailmux.config import Config, ConfigError, load_config
from mailmux.config_classes import ClassConfig, MatchConfig, RuleConfig

REPO = Path(__file__).resolve().parent.parent
VENDORS = {
    "a": {"kind": "sandbox", "weight": 70},
    "b": {"kind": "sandbox", "weight": 30},
    "c": {"kind": "sandbox", "weight": 0, "fallback": False},
}


def config(**sections: Any) -> Config:
    return Config.model_validate({"vendors": VENDORS, **sections})


def errors(tmp_path: Path, **sections: Any) -> list[str]:
    """The error lines `mailmux config check` would print for a file with these sections."""
    path = tmp_path / "mailmux.yaml"
    data = {"vendors": VENDORS, **sections}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return caught.value.errors


def book(**sections: Any) -> ClassBook:
    return ClassBook.from_config(config(**sections))


# ---------------------------------------------------------------- built-ins and the book


def test_built_in_classes_without_any_config() -> None:
    classes = book()

    assert [c.name for c in classes] == ["otp", "transactional", "bulk"]  # most urgent first
    otp = classes.get("otp")
    assert (otp.priority, otp.deadline, otp.attempt_timeout) == (100, 60.0, 5.0)
    assert classes.default is classes.get("transactional")
    assert (classes.default.priority, classes.default.deadline) == (50, None)
    assert classes.get("bulk").priority == 10
    assert all(c.ambiguous is AmbiguousPolicy.RESEND and c.hedge_after is None for c in classes)
    assert all(c.vendors is None and c.weights is None for c in classes)


def test_an_unknown_class_name_resolves_to_the_default_class() -> None:
    classes = book()

    assert classes.get("newsletter") is classes.default
    assert "newsletter" not in classes
    assert "otp" in classes


def test_a_configured_built_in_keeps_the_fields_it_does_not_set() -> None:
    otp = book(classes={"otp": {"deadline": 30, "max_attempts": 4}}).get("otp")

    assert otp == TrafficClass(
        "otp", priority=100, deadline=30.0, attempt_timeout=5.0, max_attempts=4
    )


def test_a_class_of_its_own_takes_the_default_class_settings_and_sorts_by_priority() -> None:
    classes = book(
        classes={
            "alerts": {"priority": 80, "vendors": ["a"], "hedge_after": 1.5},
            "digest": {"weights": {"b": 5}},
        }
    )

    alerts = classes.get("alerts")
    assert (alerts.priority, alerts.deadline, alerts.vendors, alerts.hedge_after) == (
        80,
        None,
        frozenset({"a"}),
        1.5,
    )
    digest = classes.get("digest")
    assert (digest.priority, dict(digest.weights or {})) == (50, {"b": 5.0})
    # equal priorities sort by name
    assert [c.name for c in classes] == ["otp", "alerts", "digest", "transactional", "bulk"]
    assert len(classes) == 5


def test_lowest_priority_is_the_priority_of_the_least_urgent_class() -> None:
    assert book().lowest_priority == 10  # bulk
    assert book(classes={"bulk": {"priority": 60}}).lowest_priority == 50  # now transactional
    assert book(classes={"backfill": {"priority": -5}}).lowest_priority == -5


def test_hedge_after_takes_p90() -> None:
    assert book(classes={"otp": {"hedge_after": "p90"}}).get("otp").hedge_after == "p90"


# ---------------------------------------------------------------- the ambiguous policy


def test_ambiguous_comes_from_the_class_then_the_old_key_then_its_default_then_resend() -> None:
    classes = book(
        classes={"otp": {"ambiguous": "assume_sent"}, "alerts": {}},
        delivery={"ambiguous": {"bulk": "assume_sent", "otp": "resend"}},
    )

    assert classes.get("otp").ambiguous is AmbiguousPolicy.ASSUME_SENT  # its own wins
    assert classes.get("bulk").ambiguous is AmbiguousPolicy.ASSUME_SENT  # delivery.ambiguous.bulk
    assert classes.get("alerts").ambiguous is AmbiguousPolicy.RESEND  # the default's default

    default_sent = book(delivery={"ambiguous": {"default": "assume_sent"}})
    assert all(c.ambiguous is AmbiguousPolicy.ASSUME_SENT for c in default_sent)


def test_a_name_only_the_old_key_lists_is_a_class_as_before() -> None:
    classes = book(delivery={"ambiguous": {"newsletter": "assume_sent"}})

    newsletter = classes.get("newsletter")
    assert newsletter.name == "newsletter"
    assert newsletter.ambiguous is AmbiguousPolicy.ASSUME_SENT
    assert newsletter.priority == classes.default.priority
    assert "default" not in classes


def test_ambiguous_policy_moved_and_delivery_still_names_it() -> None:
    assert delivery.AmbiguousPolicy is AmbiguousPolicy


# ---------------------------------------------------------------- deadlines


@pytest.mark.parametrize(
    ("name", "own", "expected"),
    [
        ("otp", None, 1060.0),  # the class's 60 s
        ("otp", 1010.0, 1010.0),  # the message says sooner
        ("otp", 2000.0, 1060.0),  # the message says later: the class wins
        ("transactional", None, None),  # neither: retry.max_age applies
        ("transactional", 5000.0, 5000.0),
    ],
)
def test_effective_deadline_is_the_earlier_of_the_message_and_the_class(
    name: str, own: float | None, expected: float | None
) -> None:
    assert effective_deadline(BUILT_IN[name], own, received_at=1000.0) == expected


# ---------------------------------------------------------------- rejections


def test_a_class_naming_an_unknown_vendor(tmp_path: Path) -> None:
    assert errors(
        tmp_path, classes={"otp": {"vendors": ["a", "x"]}, "bulk": {"weights": {"y": 1}}}
    ) == [
        "classes.otp.vendors[1]: unknown vendor 'x' (configured: a, b, c)",
        "classes.bulk.weights.y: unknown vendor (configured: a, b, c)",
    ]


def test_a_class_that_leaves_no_vendor(tmp_path: Path) -> None:
    assert errors(tmp_path, classes={"otp": {"vendors": ["c"]}}) == [
        "classes.otp.vendors: leaves no vendor to route to (the class allows c 0 (no fallback))"
    ]


def test_class_weights_of_zero_still_leave_the_fallbacks() -> None:
    otp = book(classes={"otp": {"weights": {"c": 0}}}).get("otp")

    assert dict(otp.weights or {}) == {"c": 0.0}  # a and b stay as fallbacks: accepted


def test_class_weights_only_for_the_class_vendors(tmp_path: Path) -> None:
    assert errors(tmp_path, classes={"otp": {"vendors": ["a"], "weights": {"a": 1, "b": 2}}}) == [
        "classes.otp.weights.b: not one of this class's vendors, so never used"
    ]


def test_hedging_is_refused_for_bulk(tmp_path: Path) -> None:
    assert errors(tmp_path, classes={"bulk": {"hedge_after": 2}}) == [
        "classes.bulk.hedge_after: not allowed for bulk: bulk mail is never hedged"
    ]


@pytest.mark.parametrize(
    ("sections", "source"),
    [
        (
            {"classes": {"otp": {"hedge_after": "p90", "ambiguous": "assume_sent"}}},
            "classes.otp.ambiguous",
        ),
        (
            {
                "classes": {"otp": {"hedge_after": 1}},
                "delivery": {"ambiguous": {"otp": "assume_sent"}},
            },
            "delivery.ambiguous.otp",
        ),
        (
            {
                "classes": {"otp": {"hedge_after": 1}},
                "delivery": {"ambiguous": {"default": "assume_sent"}},
            },
            "delivery.ambiguous.default",
        ),
    ],
)
def test_hedging_is_refused_where_ambiguous_means_assume_sent(
    tmp_path: Path, sections: dict[str, Any], source: str
) -> None:
    (line,) = errors(tmp_path, **sections)
    assert line.startswith(
        f"classes.otp.hedge_after: not allowed with ambiguous policy assume_sent (from {source})"
    )


def test_hedging_with_resend_is_accepted() -> None:
    classes = book(
        classes={"otp": {"hedge_after": 0.5}},
        delivery={"ambiguous": {"default": "assume_sent", "otp": "resend"}},
    )
    assert classes.get("otp").hedge_after == 0.5


def test_a_class_attempt_timeout_must_fit_in_the_lease(tmp_path: Path) -> None:
    assert errors(tmp_path, classes={"bulk": {"attempt_timeout": 60}}) == [
        "classes.bulk.attempt_timeout: must be < retry.lease_seconds (60), or a lease can "
        "run out during an attempt (got 60)"
    ]


def test_the_name_default_is_reserved(tmp_path: Path) -> None:
    assert errors(tmp_path, classes={"default": {"priority": 1}}) == [
        "classes.default: reserved: delivery.ambiguous.default covers every class it does not name"
    ]


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"hedge_after": "p95"},
            "classes.otp.hedge_after: must be a number of seconds above 0, or p90 (got 'p95')",
        ),
        (
            {"hedge_after": 0},
            "classes.otp.hedge_after: must be a number of seconds above 0, or p90 (got 0)",
        ),
        ({"hedge_after": True}, "classes.otp.hedge_after: must be a number (got true)"),
        ({"priority": True}, "classes.otp.priority: must be a whole number (got true)"),
        ({"deadline": -1}, "classes.otp.deadline: must be > 0 (got -1)"),
        ({"max_attempts": 0}, "classes.otp.max_attempts: must be ≥ 1 (got 0)"),
        ({"vendors": []}, "classes.otp.vendors: must name at least one vendor"),
        ({"weights": {}}, "classes.otp.weights: must name at least one vendor"),
        ({"weights": {"a": -1}}, "classes.otp.weights.a: must be ≥ 0 (got -1)"),
        (
            {"ambiguous": "maybe"},
            "classes.otp.ambiguous: must be one of resend, assume_sent (got 'maybe')",
        ),
        ({"deadlin": 5}, "classes.otp.deadlin: unknown key (did you mean deadline?)"),
    ],
)
def test_class_values_are_checked_with_their_paths(
    tmp_path: Path, settings: dict[str, Any], line: str
) -> None:
    assert errors(tmp_path, classes={"otp": settings}) == [line]


def test_class_names_follow_the_traffic_class_rule(tmp_path: Path) -> None:
    (line,) = errors(tmp_path, classes={"OTP": {}})
    assert line.startswith("classes.OTP: traffic class names must match")


# ---------------------------------------------------------------- the example file


def test_the_example_shows_every_class_rule_and_match_setting() -> None:
    """Docs cannot drift: every field of classes, rules and matches appears in the example."""
    example = yaml.safe_load((REPO / "mailmux.example.yaml").read_text(encoding="utf-8"))

    def keys(model: type[pydantic.BaseModel]) -> set[str]:
        return {f.alias or n for n, f in model.model_fields.items()}

    shown_class: set[str] = set().union(*example["classes"].values())
    shown_rule: set[str] = set().union(*example["rules"])
    shown_match: set[str] = set().union(*(r["match"] for r in example["rules"]))
    assert keys(ClassConfig) - shown_class == set()
    assert keys(RuleConfig) - shown_rule == set()
    assert keys(MatchConfig) - shown_match == set()
