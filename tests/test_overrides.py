"""Overrides layered over the config's routes: pure, with the clock as an argument."""

from __future__ import annotations

import pytest

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

CONFIG = (Route("a", 70.0), Route("b", 30.0), Route("c", 0.0, fallback=False))
NOW = 1000.0


def weights(**values: float) -> list[Override]:
    return [Override(OverrideKind.WEIGHTS, name, weight=w) for name, w in values.items()]


def drain(vendor: str, *, hard: bool = False, until: float | None = None) -> Override:
    return Override(OverrideKind.DRAIN, vendor, hard=hard, expires_at=until)


def pin(vendor: str) -> Override:
    return Override(OverrideKind.PIN, vendor)


def test_no_override_is_the_config() -> None:
    assert effective_routes(CONFIG, [], NOW) == CONFIG


def test_weights_replace_only_the_named_vendors() -> None:
    routes = effective_routes(CONFIG, weights(a=0, c=5), NOW)
    assert routes == (Route("a", 0.0), Route("b", 30.0), Route("c", 5.0, fallback=False))


def test_drain_leaves_a_fallback_and_hard_drain_does_not() -> None:
    soft = effective_routes(CONFIG, [drain("a")], NOW)
    assert soft[0] == Route("a", 0.0, fallback=True, drained=False)
    hard = effective_routes(CONFIG, [drain("a", hard=True)], NOW)
    assert hard[0] == Route("a", 0.0, fallback=True, drained=True)


def test_drain_outranks_a_weight_override() -> None:
    routes = effective_routes(CONFIG, [*weights(a=90), drain("a")], NOW)
    assert routes[0].weight == 0.0


def test_pin_sends_every_first_pick_to_one_vendor_and_keeps_the_others_as_fallbacks() -> None:
    routes = effective_routes(CONFIG, [pin("b")], NOW)
    assert routes == (Route("a", 0.0), Route("b", 30.0), Route("c", 0.0, fallback=True))
    assert shares(routes) == {"a": 0.0, "b": 1.0, "c": 0.0}
    # A pin on a weight-0 vendor still gives it the first picks.
    assert effective_routes(CONFIG, [pin("c")], NOW)[2].weight == 1.0


def test_a_new_pin_replaces_the_old_and_a_weight_replaces_its_own_vendor_only() -> None:
    current = [pin("a"), *weights(a=1, b=2)]
    after = merged(current, [pin("b"), *weights(b=9)])
    assert {(o.kind, o.vendor, o.weight) for o in after} == {
        (OverrideKind.WEIGHTS, "a", 1.0),
        (OverrideKind.PIN, "b", None),
        (OverrideKind.WEIGHTS, "b", 9.0),
    }


def test_restore_is_the_config_again() -> None:
    overrides = [drain("a"), *weights(b=10)]
    restored = [o for o in overrides if o.vendor != "a"]
    assert effective_routes(CONFIG, restored, NOW)[0] == CONFIG[0]


def test_expired_overrides_stop_applying_and_the_next_expiry_is_known() -> None:
    overrides = [
        drain("a", until=NOW + 5),
        Override(OverrideKind.WEIGHTS, "b", 50, expires_at=NOW + 9),
    ]
    assert effective_routes(CONFIG, overrides, NOW)[0].weight == 0.0
    assert next_expiry(overrides, NOW) == NOW + 5
    assert effective_routes(CONFIG, overrides, NOW + 5)[0].weight == 70.0
    assert next_expiry(overrides, NOW + 5) == NOW + 9
    assert effective_routes(CONFIG, overrides, NOW + 9) == CONFIG
    assert next_expiry(overrides, NOW + 9) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (weights(a=0, b=0), "no vendor would be left with a weight above 0"),
        ([drain("a"), drain("b")], "no vendor would be left with a weight above 0"),
        ([drain("b", hard=True), pin("b")], "no vendor would be left"),
        (weights(z=1), "unknown vendor 'z'"),
        (weights(a=-1), "a: weight must be a finite number >= 0"),
        (weights(a=float("inf")), "a: weight must be a finite number >= 0"),
    ],
)
def test_check_refuses_what_would_route_nothing(overrides: list[Override], message: str) -> None:
    with pytest.raises(OverrideRefused, match=message):
        check(CONFIG, overrides, NOW)


def test_check_returns_the_effective_routes() -> None:
    assert check(CONFIG, weights(a=0, b=100), NOW)[1].weight == 100.0


def test_an_override_travels_as_plain_json() -> None:
    o = Override(OverrideKind.DRAIN, "a", hard=True, expires_at=5.0, reason="r", created_by="x")
    assert Override.from_json(o.to_json()) == o


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), (1.5, 1.5)]
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "-5m", "5y"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(OverrideRefused):
        parse_duration(text)
