"""`mailmux route` and `POST /admin/v1/route` against a running mailmux, real sockets.

mailmux runs in-process with sandbox vendors a, b (50/50) and c (a fallback),
a class that allows only a and b, and three rules; the CLI runs on a thread
(it is blocking urllib), as it would from a shell.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from server_kit import running

from mailmux import cli
from mailmux.app import App
from mailmux.classes import ClassBook
from mailmux.cli_admin import route_lines
from mailmux.config import Config
from mailmux.explain import explain, route_request
from mailmux.message import InvalidMessage
from mailmux.routing import Availability, Route
from mailmux.rules import Rules

ADMIN_KEY = "admin-key-4567"
RULES = [
    {"match": {"tags": ["reset"]}, "class": "otp"},
    {"match": {"recipient_domain": ["gmail.com"]}, "vendors": ["b"]},
    {"match": {"class": "bulk", "client": "shop"}, "weights": {"c": 1}},
]


def config(tmp_path: Path) -> Config:
    return Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "store": f"sqlite:///{tmp_path / 'mailmux.db'}",
            "node_id": "test-node",
            "admin_keys": [ADMIN_KEY],
            "clients": {"shop": {"key": "shop-key-0123"}},
            "vendors": {
                "a": {"kind": "sandbox", "weight": 50},
                "b": {"kind": "sandbox", "weight": 50},
                "c": {"kind": "sandbox", "weight": 0},
            },
            "classes": {"otp": {"vendors": ["a", "b"]}},
            "rules": RULES,
        }
    )


async def mailmux(app: App, *args: str) -> int:
    """`mailmux <args> --url ... --admin-key ...` on a thread, so this loop keeps serving."""
    url = f"http://127.0.0.1:{app.port}"
    return await asyncio.to_thread(cli.main, [*args, "--url", url, "--admin-key", ADMIN_KEY])


async def post_route(app: App, body: Any, key: str | None = ADMIN_KEY) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{app.port}/admin/v1/route", json=body, headers=headers
        ) as answer,
    ):
        return answer.status, await answer.json()


async def test_route_explains_the_class_rule_the_vendor_rule_and_the_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(config(tmp_path)) as app:
        code = await mailmux(
            app, "route", "--from", "app@shop.example", "--to", "x@gmail.com", "--tag", "reset"
        )

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "class: otp (set by rules[0] (tags reset) → class otp)"
    assert lines[1] == "  priority 100, deadline 60s, attempt timeout 5s, ambiguous resend"
    assert lines[2] == "vendors: chosen by rules[1] (recipient_domain gmail.com) → vendors b"
    assert lines[3].split() == ["VENDOR", "WEIGHT", "SHARE", "STATE", "NOTE"]
    assert lines[4].split() == ["b", "50", "100%", "available"]
    assert lines[5:] == ["left out by the class or the rule: a, c", "order: b"]


async def test_route_shows_the_operator_drain_over_the_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(config(tmp_path)) as app:
        assert await mailmux(app, "drain", "a") == 0
        capsys.readouterr()
        code = await mailmux(app, "route", "--from", "app@shop.example", "--to", "x@yahoo.com")

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "class: transactional (the message's own)"
    assert lines[2] == "vendors: no rule; the class's vendors"
    rows = {line.split()[0]: line.split()[1:] for line in lines[4:7]}
    assert rows == {
        "a": ["0", "0%", "available", "configured", "50,", "fallback", "only"],
        "b": ["50", "100%", "available"],
        "c": ["0", "0%", "available", "fallback", "only"],
    }
    assert lines[-1] == "order: b, a, c"


async def test_the_admin_api_explains_a_client_rule_and_an_unknown_class(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as app:
        status, bulk = await post_route(
            app,
            {"from": "a@shop.example", "to": ["x@example.org"], "class": "bulk", "client": "shop"},
        )
        _, unknown = await post_route(
            app, {"from": "a@shop.example", "to": "x@example.org", "class": "promo"}
        )

    assert status == 200
    assert bulk["class"]["name"] == "bulk"
    assert bulk["route_rule"] == {
        "index": 2,
        "match": {"class": ["bulk"], "client": ["shop"]},
        "weights": {"c": 1.0},
    }
    shares = {v["name"]: (v["weight"], v["share"]) for v in bulk["vendors"]}
    assert shares == {"a": (0.0, 0.0), "b": (0.0, 0.0), "c": (1.0, 1.0)}
    assert bulk["order"] == ["c", "a", "b"]
    assert (unknown["requested_class"], unknown["class"]["name"]) == ("promo", "transactional")
    assert unknown["class_rule"] is None and unknown["route_rule"] is None


async def test_a_bad_request_is_refused_with_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(config(tmp_path)) as app:
        status, answer = await post_route(app, {"to": ["not an address"], "colour": 1})
        unauthorized, _ = await post_route(app, {"from": "a@b.example", "to": "c@d.example"}, None)
        code = await mailmux(app, "route", "--from", "nobody", "--to", "x@example.org")

    assert status == 400
    assert answer["error"]["code"] == "invalid_message"
    assert {d["path"] for d in answer["error"]["details"]} == {"colour", "from", "to[0]"}
    assert unauthorized == 401
    assert code == 1
    assert capsys.readouterr().err.startswith("mailmux: invalid_message: from: ")


def test_explain_takes_health_into_account() -> None:
    """Pure: an ejected vendor gets no share and is not in the plan; all ejected is panic."""
    cfg = Config.model_validate(
        {
            "vendors": {
                "a": {"kind": "sandbox", "weight": 50},
                "b": {"kind": "sandbox", "weight": 50},
            }
        }
    )
    routes = (Route("a", 50.0), Route("b", 50.0))
    message = route_request({"from": "a@shop.example", "to": "x@example.org"})

    def run(availability: dict[str, Availability]) -> dict[str, Any]:
        return explain(
            message,
            rules=Rules.from_config(cfg),
            book=ClassBook.from_config(cfg),
            config_routes=routes,
            overrides=[],
            now=0.0,
            availability=availability,
        )

    one_down = run({"a": Availability.EJECTED})
    assert [(v["name"], v["share"], v["state"], v["in_plan"]) for v in one_down["vendors"]] == [
        ("a", 0.0, "ejected", False),
        ("b", 1.0, "available", True),
    ]
    assert (one_down["order"], one_down["panic"]) == (["b"], False)
    all_down = run({"a": Availability.EJECTED, "b": Availability.EJECTED})
    assert (all_down["order"], all_down["panic"]) == (["a", "b"], True)


def test_explain_shows_vendors_at_their_limit_and_past_their_cap() -> None:
    """Pure: a vendor at its rate limit is out of the plan; one past its cap goes last."""
    cfg = Config.model_validate({"vendors": {n: {"kind": "sandbox", "weight": 1} for n in "abc"}})
    routes = (Route("a", 50.0), Route("b", 30.0), Route("c", 20.0))
    asked: list[bool] = []

    def full(urgent: bool) -> frozenset[str]:
        asked.append(urgent)
        return frozenset({"b"})

    def run(traffic_class: str) -> dict[str, Any]:
        message = route_request(
            {"from": "a@shop.example", "to": "x@example.org", "class": traffic_class}
        )
        return explain(
            message,
            rules=Rules.from_config(cfg),
            book=ClassBook.from_config(cfg),
            config_routes=routes,
            overrides=[],
            now=0.0,
            availability={},
            full=full,
            capped=frozenset({"a"}),
        )

    shown = run("otp")
    run("bulk")

    assert asked == [True, False]  # an otp may take the urgent reserve; bulk may not
    assert [(v["name"], v["share"], v["at_limit"], v["over_cap"]) for v in shown["vendors"]] == [
        ("a", 0.0, False, True),
        ("b", 0.0, True, False),
        ("c", 1.0, False, False),
    ]
    assert shown["order"] == ["c", "a"]
    lines = route_lines(shown)
    assert any(line.startswith("a ") and "past today's warm-up cap" in line for line in lines)
    assert any(line.startswith("b ") and "at its rate limit now" in line for line in lines)


def test_route_request_needs_a_sender_and_a_recipient() -> None:
    with pytest.raises(InvalidMessage) as caught:
        route_request({"tags": "reset"})

    assert [(e.path, e.code) for e in caught.value.errors] == [
        ("from", "required"),
        ("to", "required"),
        ("tags", "invalid_type"),
    ]
