"""What deciding one message's route costs: 10 vendors, 20 rules (`make bench-routing`).

Issue 10 asks for `plan()` with 10 vendors and 20 routing rules, in µs per
message. The figure measured is everything the Deliverer does per message
before its first attempt: the rules resolve the class and the rule
(`Steering.steer`), the min-share weights (`Capacity.warm`), the vendors at
their limits and past their caps (`Capacity.full`, `capped`) and the plan
itself. Beside it, for scale: `plan()` alone over the same 10 routes with no
rules and no limits. Both run over the same 1,000 varied messages (classes,
sender and recipient domains, tags, clients), 7 rounds each, interleaved;
the figures are the medians. In-process and CPU-only: nothing is sent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from mailmux.app import routes_from_config
from mailmux.capacity import Capacity
from mailmux.classes import ClassBook
from mailmux.config import Config
from mailmux.message import Address, Message
from mailmux.routing import plan
from mailmux.rules import Rules
from mailmux.steering import Steering
from mailmux.warmup import DailyUsage

VENDORS = 10
RULES = 20
MESSAGES = 1_000
ROUNDS = 7


def config() -> Config:
    """10 vendors (three rate-limited, one warming up, one kept warm) and 20 rules."""
    vendors: dict[str, Any] = {}
    for i in range(VENDORS):
        vendor: dict[str, Any] = {
            "kind": "sendgrid",
            "api_key": f"SG.key-{i}",
            "base_url": "http://127.0.0.1:9",
            "weight": 10 + i,
        }
        if i < 3:
            vendor["rate_limit"] = {"per_second": 1e9, "per_day": 10**9}
        vendors[f"v{i}"] = vendor
    today = dt.datetime.now(dt.UTC).date().isoformat()
    vendors["v8"]["warmup"] = {"start": today, "daily_caps": [10**9]}
    vendors["v9"]["warmup"] = {"min_share": 0.05}
    rules: list[dict[str, Any]] = [
        {"match": {"tags": ["login-code", "password-reset"]}, "class": "otp"},
        {"match": {"sender_domain": ["*.news.example.com"]}, "class": "bulk"},
    ]
    for i in range(RULES - len(rules)):
        pair = [f"v{i % VENDORS}", f"v{(i + 1) % VENDORS}"]
        match: dict[str, Any]
        if i % 3 == 0:
            match = {"recipient_domain": [f"mail{i}.example"]}
        elif i % 3 == 1:
            match = {"class": "bulk", "client": [f"client-{i}"]}
        else:
            match = {"tags": [f"tag-{i}"], "sender_domain": [f"shop{i}.example"]}
        if i % 2:
            rules.append({"match": match, "vendors": pair})
        else:
            rules.append({"match": match, "weights": {pair[0]: 70, pair[1]: 30}})
    clients = {f"client-{i}": {"key": f"client-key-{i:02d}-0123456789"} for i in range(RULES)}
    return Config.model_validate({"vendors": vendors, "rules": rules, "clients": clients})


def messages(rng: random.Random) -> list[Message]:
    """Varied messages: most match no rule, as most mail in production would."""
    out = []
    for _ in range(MESSAGES):
        n = rng.randrange(RULES)
        out.append(
            Message(
                sender=Address(
                    rng.choice(["app@shop.example", f"x@shop{n}.example", "n@a.news.example.com"])
                ),
                to=(Address(f"user@{rng.choice(['example.net', f'mail{n}.example'])}"),),
                subject="s",
                text="t",
                tags=tuple(rng.sample(["login-code", f"tag-{n}", "receipt"], k=rng.randrange(3))),
                traffic_class=rng.choice(["transactional", "bulk", "otp"]),
                client=rng.choice([None, f"client-{n}"]),
            )
        )
    return out


def per_message(run: Callable[[Message], object], batch: list[Message]) -> float:
    """µs per message of one pass over `batch`."""
    started = time.perf_counter()
    for message in batch:
        run(message)
    return (time.perf_counter() - started) / len(batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    cfg = config()
    routes = routes_from_config(cfg)
    steering = Steering(ClassBook.from_config(cfg), Rules.from_config(cfg), routes)
    capacity = Capacity.from_config(cfg, DailyUsage())
    rng = random.Random(10)
    batch = messages(rng)
    availability: dict[str, Any] = {}

    def routed(message: Message) -> object:
        steer = steering.steer(message)
        return plan(
            message,
            capacity.warm(steer.routes),
            availability,
            rng,
            full=capacity.full(urgent=True),
            capped=capacity.capped(),
        )

    def bare(message: Message) -> object:
        return plan(message, routes, availability, rng)

    full_path: list[float] = []
    plain: list[float] = []
    for _ in range(args.rounds):
        full_path.append(per_message(routed, batch))
        plain.append(per_message(bare, batch))
    steered = statistics.median(full_path)
    alone = statistics.median(plain)
    print(
        f"routing one message: {VENDORS} vendors, {RULES} rules, "
        f"{MESSAGES} messages x {args.rounds} rounds (medians)"
    )
    print(f"  rules + limits + caps + plan(): {steered:7.2f} µs/message")
    print(f"  plan() alone, no rules:         {alone:7.2f} µs/message")
    print(f"  ratio:                          {steered / alone:7.2f}x")


if __name__ == "__main__":
    main()
