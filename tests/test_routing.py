"""The router: Cloudflare equivalence, weighted distribution, fallbacks, health, retries."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from mailmux.message import Address, Message
from mailmux.routing import Availability, Plan, Route, plan

MESSAGE = Message(sender=Address("app@example.com"), to=(Address("user@example.org"),))
UP: dict[str, Availability] = {}
EJECTED = Availability.EJECTED
PROBE = Availability.PROBE


class Draws:
    """A random source that replays given draws and counts how many were taken."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.taken = 0

    def random(self) -> float:
        value = self.values[self.taken % len(self.values)]
        self.taken += 1
        return value


def first_picks(
    routes: list[Route], n: int, seed: int, availability: dict[str, Availability] | None = None
) -> Counter[str]:
    rng = random.Random(seed)
    avail = availability or UP
    return Counter(plan(MESSAGE, routes, avail, rng).vendors[0] for _ in range(n))


# --- Cloudflare's picker: vendor 1 iff u < ratio --------------------------------------------

LARGEST_BELOW_ONE = 1.0 - 2.0**-53


def cloudflare(ratio: float, u: float) -> str:
    return "one" if u < ratio else "two"


def routed(ratio: float, u: float) -> str:
    routes = [Route("one", ratio), Route("two", 1.0 - ratio)]
    return plan(MESSAGE, routes, UP, Draws(u)).vendors[0]


def test_cloudflare_equivalence_over_seeded_draws() -> None:
    rng = random.Random(20230308)
    pairs = 0
    for _ in range(40_000):
        ratio = rng.random()
        u = rng.random()
        # A random pair, the draw landing exactly on the ratio, and its float neighbours.
        for draw in (u, ratio, math.nextafter(ratio, 0.0), math.nextafter(ratio, 1.0)):
            if draw < 1.0:
                assert routed(ratio, draw) == cloudflare(ratio, draw), (ratio, draw)
                pairs += 1
    assert pairs >= 100_000


EDGE_RATIOS = [0.0, 1.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1 / 3, 2 / 3, 5e-324, 1e-17, 2.0**-53]
EDGE_RATIOS += [LARGEST_BELOW_ONE, 1.0 - 2.0**-52, 0.5 - 2.0**-54]


@pytest.mark.parametrize("ratio", EDGE_RATIOS)
def test_cloudflare_equivalence_at_edges(ratio: float) -> None:
    draws = {0.0, 5e-324, ratio, math.nextafter(ratio, 0.0), math.nextafter(ratio, 2.0)}
    draws |= {0.1, 0.3, 0.5, 0.7, 0.9, LARGEST_BELOW_ONE}
    for u in sorted(d for d in draws if 0.0 <= d < 1.0):
        assert routed(ratio, u) == cloudflare(ratio, u), (ratio, u)


def test_ratio_one_always_vendor_one_and_ratio_zero_never() -> None:
    rng = random.Random(7)
    draws = [0.0, LARGEST_BELOW_ONE] + [rng.random() for _ in range(2_000)]
    assert {routed(1.0, u) for u in draws} == {"one"}
    assert {routed(0.0, u) for u in draws} == {"two"}


def test_draw_equal_to_ratio_goes_to_vendor_two() -> None:
    assert routed(0.3, 0.3) == "two"
    assert routed(0.3, math.nextafter(0.3, 0.0)) == "one"


# --- distribution for N vendors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [
        [5, 3, 2],
        [1, 1, 1, 1],
        [70, 20, 7, 2, 1],
        [0.25, 0.5, 0.125, 0.125],
    ],
)
def test_first_pick_frequency_matches_weight_share(weights: list[float]) -> None:
    routes = [Route(f"v{i}", w) for i, w in enumerate(weights)]
    n = 60_000
    counts = first_picks(routes, n, seed=len(weights))
    total = sum(weights)
    for i, w in enumerate(weights):
        p = w / total
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[f"v{i}"] - n * p) <= 5 * sigma, (i, counts)


def test_evenly_spaced_draws_split_exactly_by_weight() -> None:
    """A deterministic check of the mapping itself: a uniform grid of draws splits 70/20/10."""
    routes = [Route("a", 70), Route("b", 20), Route("c", 10)]
    m = 10_000
    counts = Counter(plan(MESSAGE, routes, UP, Draws((i + 0.5) / m)).vendors[0] for i in range(m))
    assert counts == {"a": 7_000, "b": 2_000, "c": 1_000}


# --- eligibility ------------------------------------------------------------------------------


def test_weight_zero_fallback_is_never_first_and_comes_last() -> None:
    routes = [Route("a", 1), Route("standby", 0), Route("c", 1)]
    rng = random.Random(3)
    plans = {plan(MESSAGE, routes, UP, rng).vendors for _ in range(2_000)}
    assert plans == {("a", "c", "standby"), ("c", "a", "standby")}


def test_weight_zero_without_fallback_is_never_planned() -> None:
    routes = [Route("a", 1), Route("cold", 0, fallback=False), Route("b", 2)]
    assert plan(MESSAGE, routes, UP, Draws(0.0)).vendors == ("a", "b")


def test_fallback_false_only_matters_at_weight_zero() -> None:
    routes = [Route("a", 1, fallback=False), Route("b", 1)]
    assert plan(MESSAGE, routes, UP, Draws(0.0)).vendors == ("a", "b")


def test_drained_vendor_gets_nothing_whatever_its_weight() -> None:
    routes = [Route("big", 100, drained=True), Route("small", 1), Route("spare", 0)]
    assert first_picks(routes, 500, seed=1) == {"small": 500}
    assert plan(MESSAGE, routes, UP, Draws(0.0)).vendors == ("small", "spare")


def test_fallbacks_follow_in_descending_weight_ties_in_config_order() -> None:
    routes = [Route("a", 1), Route("b", 5), Route("c", 3), Route("d", 3), Route("z", 0)]
    # u = 0 picks the first weighted route in config order.
    assert plan(MESSAGE, routes, UP, Draws(0.0)).vendors == ("a", "b", "c", "d", "z")
    # u just below 1 picks the last weighted one.
    assert plan(MESSAGE, routes, UP, Draws(LARGEST_BELOW_ONE)).vendors == (
        "d",
        "b",
        "c",
        "a",
        "z",
    )


def test_only_weight_zero_fallbacks_up_plans_them_without_a_draw() -> None:
    routes = [Route("a", 1), Route("s1", 0), Route("s2", 0)]
    rng = Draws(0.5)
    result = plan(MESSAGE, routes, {"a": EJECTED}, rng)
    assert result == Plan(("s1", "s2"))
    assert rng.taken == 0


def test_every_weighted_plan_takes_exactly_one_draw() -> None:
    routes = [Route("a", 1), Route("b", 2), Route("c", 0)]
    rng = Draws(0.9)
    plan(MESSAGE, routes, UP, rng)
    assert rng.taken == 1
    plan(MESSAGE, routes, {"a": EJECTED, "b": EJECTED, "c": EJECTED}, rng, avoid="b")
    assert rng.taken == 2


@pytest.mark.parametrize(
    "routes",
    [
        [],
        [Route("a", 1, drained=True), Route("b", 0, fallback=False)],
        [Route("a", 0, fallback=False)],
    ],
)
def test_no_eligible_vendor_is_an_empty_plan(routes: list[Route]) -> None:
    rng = Draws(0.5)
    assert plan(MESSAGE, routes, UP, rng) == Plan(())
    assert rng.taken == 0


def test_subnormal_weight_still_picks_a_weighted_vendor() -> None:
    """u * total can round up to the total for tiny weights; the last weighted vendor wins."""
    routes = [Route("tiny", 5e-324), Route("spare", 0)]
    assert plan(MESSAGE, routes, UP, Draws(LARGEST_BELOW_ONE)).vendors == ("tiny", "spare")


# --- health ------------------------------------------------------------------------------------


def test_ejected_vendor_is_left_out_and_weights_renormalize() -> None:
    routes = [Route("a", 50), Route("b", 30), Route("c", 20)]
    avail = {"a": EJECTED}
    counts = first_picks(routes, 20_000, seed=11, availability=avail)
    assert set(counts) == {"b", "c"}
    assert abs(counts["b"] / 20_000 - 0.6) < 0.02
    assert plan(MESSAGE, routes, avail, Draws(0.0)) == Plan(("b", "c"))


def test_missing_availability_counts_as_available() -> None:
    routes = [Route("a", 1), Route("b", 1)]
    assert plan(MESSAGE, routes, {"b": EJECTED}, Draws(LARGEST_BELOW_ONE)).vendors == ("a",)


def test_probe_counts_as_up() -> None:
    routes = [Route("a", 1), Route("b", 1)]
    result = plan(MESSAGE, routes, {"a": PROBE, "b": EJECTED}, Draws(LARGEST_BELOW_ONE))
    assert result == Plan(("a",))


def test_all_ejected_is_panic_routed_by_weight() -> None:
    routes = [Route("a", 3), Route("b", 1), Route("s", 0), Route("d", 5, drained=True)]
    avail = {"a": EJECTED, "b": EJECTED, "s": EJECTED, "d": Availability.AVAILABLE}
    assert plan(MESSAGE, routes, avail, Draws(0.8)) == Plan(("b", "a", "s"), panic=True)
    counts = first_picks(routes, 20_000, seed=5, availability=avail)
    assert set(counts) == {"a", "b"}
    assert abs(counts["a"] / 20_000 - 0.75) < 0.02


def test_up_weight_zero_fallback_prevents_panic() -> None:
    routes = [Route("a", 1), Route("s", 0)]
    assert plan(MESSAGE, routes, {"a": EJECTED}, Draws(0.5)) == Plan(("s",))


# --- avoid (retries) ---------------------------------------------------------------------------


def test_avoided_vendor_is_never_first_and_always_last() -> None:
    routes = [Route("a", 90), Route("b", 5), Route("c", 5), Route("s", 0)]
    rng = random.Random(9)
    for _ in range(2_000):
        vendors = plan(MESSAGE, routes, UP, rng, avoid="a").vendors
        assert vendors[0] in {"b", "c"}
        assert vendors[-1] == "a"
        assert sorted(vendors) == ["a", "b", "c", "s"]


def test_avoided_vendor_is_first_when_it_is_the_only_one_up() -> None:
    routes = [Route("a", 1), Route("b", 1)]
    rng = Draws(0.9)
    assert plan(MESSAGE, routes, {"b": EJECTED}, rng, avoid="a") == Plan(("a",))
    assert rng.taken == 0  # nothing to choose between


def test_avoided_vendor_goes_behind_an_up_fallback() -> None:
    routes = [Route("a", 1), Route("b", 1), Route("s", 0)]
    result = plan(MESSAGE, routes, {"b": EJECTED}, Draws(0.0), avoid="a")
    assert result == Plan(("s", "a"))


def test_avoided_vendor_that_is_ejected_or_unknown_changes_nothing() -> None:
    routes = [Route("a", 1), Route("b", 1)]
    assert plan(MESSAGE, routes, {"a": EJECTED}, Draws(0.0), avoid="a") == Plan(("b",))
    assert plan(MESSAGE, routes, UP, Draws(0.0), avoid="nobody") == Plan(("a", "b"))


def test_avoid_applies_in_panic() -> None:
    routes = [Route("a", 1), Route("b", 1)]
    avail = {"a": EJECTED, "b": EJECTED}
    assert plan(MESSAGE, routes, avail, Draws(0.0), avoid="a") == Plan(("b", "a"), panic=True)


def test_a_full_vendor_is_left_out_and_named_as_waiting() -> None:
    routes = [Route("a", 70), Route("b", 30), Route("c", 0)]
    chosen = plan(MESSAGE, routes, UP, Draws(0.1), full={"a"})
    assert chosen.vendors == ("b", "c") and chosen.waiting == ("a",)


def test_full_vendors_stay_out_in_panic_too() -> None:
    routes = [Route("a", 70), Route("b", 30)]
    chosen = plan(MESSAGE, routes, {"a": EJECTED, "b": EJECTED}, Draws(0.1), full={"b"})
    assert chosen.vendors == ("a",) and chosen.panic and chosen.waiting == ("b",)


def test_every_vendor_full_is_an_empty_plan_that_says_who_to_wait_for() -> None:
    chosen = plan(MESSAGE, [Route("a", 1), Route("b", 1)], UP, Draws(0.1), full={"a", "b"})
    assert chosen.vendors == () and chosen.waiting == ("a", "b")


def test_a_capped_vendor_spills_its_share_by_weight_and_comes_last() -> None:
    routes = [Route("new", 50), Route("b", 30), Route("c", 20)]
    firsts = Counter(
        plan(MESSAGE, routes, UP, Draws(i / 100), capped={"new"}).vendors[0] for i in range(100)
    )
    assert firsts == {"b": 60, "c": 40}  # 30:20 of what is left
    chosen = plan(MESSAGE, routes, UP, Draws(0.0), capped={"new"})
    assert chosen.vendors == ("b", "c", "new") and chosen.over_cap == ("new",)


def test_capped_vendors_are_the_plan_when_no_other_is_up() -> None:
    routes = [Route("new", 50), Route("b", 30)]
    chosen = plan(MESSAGE, routes, {"b": EJECTED}, Draws(0.0), capped={"new"})
    assert chosen.vendors == ("new",) and chosen.over_cap == ("new",) and not chosen.panic
    in_panic = plan(MESSAGE, routes, {"b": EJECTED, "new": EJECTED}, Draws(0.0), capped={"new"})
    assert in_panic.panic and in_panic.vendors == ("b", "new")


def test_the_cap_outranks_avoid_but_avoid_orders_capped_vendors() -> None:
    routes = [Route("a", 50), Route("new", 50)]
    assert plan(MESSAGE, routes, UP, Draws(0.0), avoid="a", capped={"new"}).vendors == (
        "a",
        "new",
    )
    both = plan(MESSAGE, routes, UP, Draws(0.0), avoid="a", capped={"a", "new"})
    assert both.vendors == ("new", "a") and both.over_cap == ("new", "a")


def test_no_cap_and_no_limit_leave_the_plan_as_it_was() -> None:
    routes = [Route("a", 70), Route("b", 30)]
    for u in (0.0, 0.69, 0.7, 0.99):
        assert plan(MESSAGE, routes, UP, Draws(u), full=(), capped=()) == plan(
            MESSAGE, routes, UP, Draws(u)
        )
