"""The operator's commands: `mailmux vendors`, `weights`, `drain`, `restore`, `pin`, `audit`,
`reload`, `route`, `warmup`.

Each talks to a running mailmux's admin API (`--url` / `MAILMUX_URL`, key
`--admin-key` / `MAILMUX_ADMIN_KEY`) and each change prints the effective
split right after it in one line, so the operator sees where mail goes now
without a second command. The formatting is pure (`split_line`, `describe`),
apart from `print`.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from mailmux.cli import EXIT_OK, CliError, _request


def _admin(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    status, answer = _request(f"{args.url}/admin/v1/{path}", args.admin_key, method, body)
    if status >= 400:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise CliError(f"{error.get('code', status)}: {error.get('message', answer)}")
    return answer


def _clock(at: float, now: float) -> str:
    """An instant as the operator's wall clock shows it; seconds when it is near."""
    return time.strftime("%H:%M:%S" if at - now < 120 else "%H:%M", time.localtime(at))


def describe(override: Mapping[str, Any]) -> str:
    """One override in a few words: `drained`, `hard-drained`, `pinned`, `weight 5`."""
    kind = override["kind"]
    if kind == "drain":
        return "hard-drained" if override.get("hard") else "drained"
    if kind == "pin":
        return "pinned"
    return f"weight {override['weight']:g}"


def _overrides_note(vendor: Mapping[str, Any], now: float) -> str:
    notes = []
    for o in vendor["overrides"]:
        until = o.get("expires_at")
        notes.append(describe(o) + ("" if until is None else f", until {_clock(until, now)}"))
    return "; ".join(notes)


def split_line(vendors: Sequence[Mapping[str, Any]], now: float) -> str:
    """`split: a 0% (drained, until 14:20), b 100%`: first picks while every vendor is up."""
    parts = []
    for v in vendors:
        note = _overrides_note(v, now)
        parts.append(f"{v['name']} {v['share'] * 100:.0f}%" + (f" ({note})" if note else ""))
    return "split: " + ", ".join(parts)


def _table_lines(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    for line in _table_lines(rows):
        print(line)


def cmd_vendors(args: argparse.Namespace) -> int:
    answer = _admin(args, "GET", "vendors")
    vendors = answer["vendors"]
    now = time.time()
    rows = [
        ("VENDOR", "KIND", "CONFIGURED", "EFFECTIVE", "SHARE", "OVERRIDE", "STATE", "LAST ERROR")
    ]
    for v in vendors:
        rows.append(
            (
                v["name"],
                v["kind"],
                f"{v['configured_weight']:g}",
                f"{v['weight']:g}",
                f"{v['share'] * 100:.0f}%",
                _overrides_note(v, now) or "-",
                v["state"] + (f" ({v['last_reason']})" if v["state"] != "healthy" else ""),
                v["last_error"] or "",
            )
        )
    _print_table(rows)
    print(split_line(vendors, now))
    for line in reload_error_lines(answer.get("config")):
        print(line)
    return EXIT_OK


def reload_error_lines(config: Mapping[str, Any] | None) -> list[str]:
    """A refused reload, shown until a reload succeeds: when, which file, every error."""
    if config is None or not config.get("reload_error"):
        return []
    error = config["reload_error"]
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(error["at"]))
    loaded = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(config["loaded_at"]))
    head = (
        f"config reload refused at {at} ({error['path']}); still running the config "
        f"loaded at {loaded}:"
    )
    return [head, *(f"  {line}" for line in error["errors"])]


def cmd_reload(args: argparse.Namespace) -> int:
    status, answer = _request(f"{args.url}/admin/v1/reload", args.admin_key, "POST", None)
    if status == 422 and isinstance(answer, dict) and "errors" in answer:
        lines = "\n".join(f"  {line}" for line in answer["errors"])
        raise CliError(f"config {answer['path']} refused; the running config stays:\n{lines}")
    if status >= 400:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise CliError(f"{error.get('code', status)}: {error.get('message', answer)}")
    print(f"reloaded {answer['path']}: {answer['summary']}")
    print(split_line(_admin(args, "GET", "vendors")["vendors"], time.time()))
    return EXIT_OK


def _change(args: argparse.Namespace, body: dict[str, Any]) -> int:
    if args.reason:
        body["reason"] = args.reason
    if args.duration:
        body["for"] = args.duration
    answer = _admin(args, "POST", "overrides", body)
    print(split_line(answer["vendors"], time.time()))
    return EXIT_OK


def cmd_weights(args: argparse.Namespace) -> int:
    weights: dict[str, float] = {}
    for pair in args.pairs:
        name, sep, value = pair.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise CliError(f"{pair!r}: expected NAME=WEIGHT, e.g. a=0 b=100") from None
        if not sep or not name:
            raise CliError(f"{pair!r}: expected NAME=WEIGHT, e.g. a=0 b=100")
    return _change(args, {"kind": "weights", "weights": weights})


def cmd_drain(args: argparse.Namespace) -> int:
    return _change(args, {"kind": "drain", "vendor": args.vendor, "hard": args.hard})


def cmd_pin(args: argparse.Namespace) -> int:
    return _change(args, {"kind": "pin", "vendor": args.vendor})


def cmd_restore(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode({"reason": args.reason}) if args.reason else ""
    vendor = urllib.parse.quote(args.vendor, safe="")
    answer = _admin(args, "DELETE", f"overrides/{vendor}" + (f"?{query}" if query else ""))
    print(split_line(answer["vendors"], time.time()))
    return EXIT_OK


def _audit_what(event: Mapping[str, Any], field: str) -> str:
    items = event[field]
    return ", ".join(f"{o['vendor']} {describe(o)}" if "kind" in o else o["vendor"] for o in items)


def cmd_audit(args: argparse.Namespace) -> int:
    events = _admin(args, "GET", f"audit?limit={args.limit}")["events"]
    rows = [("AT", "WHO", "ACTION", "WHAT", "PREVIOUS", "REASON")]
    for e in events:
        rows.append(
            (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"])),
                e["who"],
                e["action"],
                _audit_what(e, "what") or "-",
                _audit_what(e, "previous") or "-",
                e["reason"],
            )
        )
    _print_table(rows)
    return EXIT_OK


def _rule_text(rule: Mapping[str, Any]) -> str:
    """`rules[1] (recipient_domain gmail.com) → vendors a, b`."""
    match = rule["match"]
    held = "; ".join(f"{k} {', '.join(v)}" for k, v in match.items()) or "every message"
    if "class" in rule and isinstance(rule["class"], str):
        action = f"class {rule['class']}"
    elif "vendors" in rule:
        action = "vendors " + ", ".join(rule["vendors"])
    else:
        action = "weights " + ", ".join(f"{v} {w:g}" for v, w in rule["weights"].items())
    return f"rules[{rule['index']}] ({held}) → {action}"


def _class_text(cls: Mapping[str, Any]) -> str:
    parts = [f"priority {cls['priority']}"]
    for key, label in (("deadline", "deadline"), ("attempt_timeout", "attempt timeout")):
        if cls[key] is not None:
            parts.append(f"{label} {cls[key]:g}s")
    if cls["max_attempts"] is not None:
        parts.append(f"at most {cls['max_attempts']} attempts")
    parts.append(f"ambiguous {cls['ambiguous']}")
    hedge = cls["hedge_after"]
    if hedge is not None:
        parts.append(f"hedged after {hedge if isinstance(hedge, str) else f'{hedge:g}s'}")
    return ", ".join(parts)


def route_lines(answer: Mapping[str, Any]) -> list[str]:
    """The explanation of `POST /admin/v1/route` in a few lines (see `mailmux.explain`)."""
    cls = answer["class"]
    if answer["class_rule"] is not None:
        how = f"set by {_rule_text(answer['class_rule'])}"
    elif answer["requested_class"] != cls["name"]:
        how = f"the default class: {answer['requested_class']!r} is not a configured class"
    else:
        how = "the message's own"
    lines = [f"class: {cls['name']} ({how})", f"  {_class_text(cls)}"]
    rule = answer["route_rule"]
    lines.append(
        "vendors: "
        + ("no rule; the class's vendors" if rule is None else f"chosen by {_rule_text(rule)}")
    )
    rows = [("VENDOR", "WEIGHT", "SHARE", "STATE", "NOTE")]
    for v in answer["vendors"]:
        notes = []
        if v["weight"] != v["configured_weight"]:
            notes.append(f"configured {v['configured_weight']:g}")
        if v["drained"]:
            notes.append("hard-drained")
        elif v.get("at_limit"):
            notes.append("at its rate limit now")
        elif v.get("over_cap"):
            notes.append("past today's warm-up cap: last")
        elif not v["in_plan"]:
            notes.append("not in the plan")
        elif v["weight"] == 0:
            notes.append("fallback only")
        rows.append(
            (
                v["name"],
                f"{v['weight']:g}",
                f"{v['share'] * 100:.0f}%",
                v["state"],
                ", ".join(notes),
            )
        )
    lines += _table_lines(rows)
    if answer["left_out"]:
        lines.append("left out by the class or the rule: " + ", ".join(answer["left_out"]))
    order = ", ".join(answer["order"]) or "none: no vendor is left to try"
    lines.append(
        f"order: {order}" + (" (panic: every vendor is ejected)" if answer["panic"] else "")
    )
    return lines


def cmd_route(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"from": args.sender, "to": args.to}
    for key, value in (("cc", args.cc), ("class", args.traffic_class), ("tags", args.tag)):
        if value:
            body[key] = value
    if args.client:
        body["client"] = args.client
    for line in route_lines(_admin(args, "POST", "route", body)):
        print(line)
    return EXIT_OK


def _ramp_day(schedule: Mapping[str, Any]) -> str:
    """`3/30`, `in 5 days` (before its start), `done`, or `-` for a min share alone."""
    day, days = schedule["day"], schedule["ramp_days"]
    if day is None:
        return "-"
    if day < 1:
        return f"in {1 - day} day" + ("s" if day < 0 else "")
    return f"{day}/{days}" if day <= days else "done"


def _min_share(schedule: Mapping[str, Any]) -> str:
    wanted, today = schedule["min_share"], schedule["share"]
    if wanted is None:
        return "-"
    return f"{wanted * 100:g}%" + ("" if today is None else f" (today {today * 100:.1f}%)")


def warmup_rows(schedules: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """The `mailmux warmup` table: one row per schedule under a header."""
    rows: list[tuple[str, ...]] = [
        ("VENDOR", "START", "DAY", "CAP TODAY", "SENT TODAY", "DAYS LEFT", "MIN SHARE")
    ]
    for s in schedules:
        sent = str(s["sent"]) + (f" (+{s['in_flight']} in flight)" if s["in_flight"] else "")
        rows.append(
            (
                s["vendor"],
                s["start"] or "-",
                _ramp_day(s),
                "none" if s["cap"] is None else str(s["cap"]),
                sent,
                str(s["days_left"]),
                _min_share(s),
            )
        )
    return rows


def cmd_warmup(args: argparse.Namespace) -> int:
    answer = _admin(args, "GET", "warmup")
    if not answer["schedules"]:
        print("no warm-up schedules configured (vendors.<name>.warmup)")
        return EXIT_OK
    print(f"UTC day {answer['day']}")
    _print_table(warmup_rows(answer["schedules"]))
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Register the commands on `mailmux`'s subparsers."""

    def admin(name: str, help_text: str, *, change: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--url", default=None, help="mailmux base URL (env MAILMUX_URL)")
        p.add_argument(
            "--admin-key",
            default=os.environ.get("MAILMUX_ADMIN_KEY"),
            help="one of admin_keys (env MAILMUX_ADMIN_KEY); none needed on loopback without",
        )
        if change:
            p.add_argument("--reason", default="", help="why, for the audit")
        return p

    def lasting(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--for", dest="duration", default=None, help="expire after this long: 90s, 15m, 2h"
        )

    vendors = admin("vendors", "vendors: weights, overrides, health, last error", change=False)
    vendors.set_defaults(func=cmd_vendors)
    weights = admin("weights", "override weights: mailmux weights a=0 b=100")
    weights.add_argument("pairs", nargs="+", metavar="NAME=WEIGHT")
    lasting(weights)
    weights.set_defaults(func=cmd_weights)
    drain = admin("drain", "no first picks for a vendor (still a last-resort fallback)")
    drain.add_argument("vendor")
    drain.add_argument("--hard", action="store_true", help="not even as a fallback")
    lasting(drain)
    drain.set_defaults(func=cmd_drain)
    pin = admin("pin", "every first pick to one vendor; the others stay fallbacks")
    pin.add_argument("vendor")
    lasting(pin)
    pin.set_defaults(func=cmd_pin)
    restore = admin("restore", "remove every override on a vendor")
    restore.add_argument("vendor")
    restore.set_defaults(func=cmd_restore)
    audit = admin("audit", "every override change: who, when, what, why, previous", change=False)
    audit.add_argument("--limit", type=int, default=100)
    audit.set_defaults(func=cmd_audit)
    reload = admin("reload", "re-read the config file; an invalid one is refused", change=False)
    reload.set_defaults(func=cmd_reload)
    route = admin("route", "the plan a message would get, and which rule chose it", change=False)
    route.add_argument("--from", dest="sender", required=True)
    route.add_argument("--to", action="append", required=True)
    route.add_argument("--cc", action="append")
    route.add_argument("--class", dest="traffic_class")
    route.add_argument("--tag", action="append", help="a tag of the message (repeatable)")
    route.add_argument("--client", help="the configured client the message would come from")
    route.set_defaults(func=cmd_route)
    warmup = admin(
        "warmup", "warm-up schedules: day, today's cap, sent today, days left", change=False
    )
    warmup.set_defaults(func=cmd_warmup)
