"""The `mailmux` command: serve, send, status, emulate, config check, overrides.

The operator's commands (vendors, weights, drain, restore, pin, audit) live
in `cli_admin`.

Errors are one line on stderr. Exit codes: 0 success (for `send`: sent or
queued), 1 the operation failed (message failed or expired, server
unreachable, invalid config), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from mailmux.config import CONFIG_FILE, Config, ConfigError, load_config
from mailmux.logs import LOG_FORMATS
from mailmux.logs import configure as configure_logging
from mailmux.spool.base import StoreUnavailable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: The AUTH user of `send --smtp` without --user: a key from `api_keys` is taken with any name.
DEFAULT_SMTP_USER = "mailmux"


class CliError(Exception):
    """A failure to report in one line."""


def _default_url() -> str:
    url = os.environ.get("MAILMUX_URL")
    if url:
        return url.rstrip("/")
    try:
        config = load_config(None)
    except ConfigError:
        return "http://127.0.0.1:8025"
    host = config.listen_host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.listen_port}"


def _request(
    url: str,
    api_key: str | None,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            return err.code, orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise CliError(f"{url}: HTTP {err.code}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CliError(f"cannot reach mailmux at {url}: {reason}") from err


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: a faster event loop for the hot path."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def cmd_serve(args: argparse.Namespace) -> int:
    from mailmux.app import App, serve
    from mailmux.malloc import release_large_blocks

    config = load_config(args.config)
    path = args.config or (CONFIG_FILE if Path(CONFIG_FILE).exists() else None)
    exposed = config.exposed()
    if exposed and not config.client_keys:
        raise CliError(
            f"{'; '.join(exposed)}: not a loopback address, and no api_keys or clients are "
            "configured; add keys or listen on 127.0.0.1"
        )
    try:
        app = App(config, config_path=path)
    except ValueError as err:
        raise CliError(str(err)) from err
    release_large_blocks()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(app))
    except (OSError, sqlite3.Error, StoreUnavailable) as err:  # port taken, bad spool file, ...
        raise CliError(f"cannot start: {err}") from err
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    if args.smtp is not None:
        return _send_smtp(args)
    tls_options = [o for o, v in (("--starttls", args.starttls), ("--tls", args.tls)) if v]
    tls_options += [o for o, v in (("--user", args.user), ("--cafile", args.cafile)) if v]
    if tls_options:
        return _usage(f"{', '.join(tls_options)}: only with --smtp")
    body: dict[str, Any] = {"from": args.sender, "to": args.to, "subject": args.subject}
    for field, value in (("cc", args.cc), ("bcc", args.bcc)):
        if value:
            body[field] = value
    if args.text is not None:
        body["text"] = args.text
    if args.html is not None:
        body["html"] = args.html
    if args.traffic_class:
        body["class"] = args.traffic_class
    if args.deadline is not None:
        body["deadline"] = args.deadline
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    _, reply = _request(f"{args.url}/v1/messages", args.api_key, "POST", body, headers)
    if "error" in reply and "id" not in reply:
        raise CliError(f"{reply['error']['code']}: {reply['error']['message']}")
    state = reply["state"]
    if state == "sent":
        print(
            f"sent via {reply['vendor']} (vendor message id {reply['vendor_message_id']}); "
            f"id {reply['id']}"
        )
    elif state == "queued":
        print(f"queued in the spool (no vendor accepted it yet); id {reply['id']}")
    else:
        print(f"{state}: {reply.get('reason', '')}; id {reply['id']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _configured_smtp() -> str | None:
    """`smtp.listen` of the configuration `serve` would load, if it sets one."""
    try:
        config = load_config(None)
    except ConfigError:
        return None
    return config.smtp.listen


def _send_smtp(args: argparse.Namespace) -> int:
    """`send --smtp`: the message over SMTP submission; the server's final reply, one line."""
    from mailmux import cli_smtp

    if args.idempotency_key:
        return _usage("--idempotency-key: SMTP has no idempotency key; use the HTTP API")
    target = args.smtp or os.environ.get("MAILMUX_SMTP") or _configured_smtp()
    if not target:
        return _usage("--smtp: give HOST:PORT, set MAILMUX_SMTP, or configure smtp.listen")
    draft = cli_smtp.Draft(
        args.sender,
        args.to,
        args.cc or (),
        args.bcc or (),
        args.subject,
        args.text,
        args.html,
        args.traffic_class,
        args.deadline,
    )
    try:
        host, port = cli_smtp.parse_target(target)
        tls = "implicit" if args.tls else "starttls" if args.starttls else "none"
        user = args.user or DEFAULT_SMTP_USER
        connection = cli_smtp.Connection(host, port, tls, user, args.api_key, args.cafile)
        sent = asyncio.run(cli_smtp.send(draft, connection))
    except cli_smtp.UsageError as err:
        return _usage(str(err))
    except cli_smtp.Refused as err:
        raise CliError(str(err)) from err
    print(sent.reply)
    if sent.refused:
        each = "; ".join(f"{address}: {reply}" for address, reply in sent.refused.items())
        print(f"mailmux: accepted without these recipients: {each}", file=sys.stderr)
    return EXIT_OK


def _usage(message: str) -> int:
    print(f"mailmux: {message}", file=sys.stderr)
    return EXIT_USAGE


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def cmd_status(args: argparse.Namespace) -> int:
    status, report = _request(f"{args.url}/v1/health", args.api_key)
    if status != 200:
        raise CliError(f"{report['error']['code']}: {report['error']['message']}")
    rows = [("VENDOR", "KIND", "WEIGHT", "STATE", "REQS", "SUCCESS", "P50", "P90", "LAST ERROR")]
    for v in report["vendors"]:
        rate = v["success_rate"]
        rows.append(
            (
                v["name"],
                v["kind"],
                _fmt(v["weight"]) + (" (drained)" if v["drained"] else ""),
                v["state"] + (f" ({v['last_reason']})" if v["state"] != "healthy" else ""),
                str(v["requests"]),
                "-" if rate is None else f"{rate * 100:.1f}%",
                _fmt(v["latency_p50_ms"], "ms"),
                _fmt(v["latency_p90_ms"], "ms"),
                v["last_error"] or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"status: {report['status']}")
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    spool = report["spool"]
    print("messages: " + ", ".join(f"{k} {n}" for k, n in spool.items()))
    for v in report["vendors"]:
        if v["state"] != "healthy" and v["last_reason"] == "vendor_config":
            print(
                f"vendor {v['name']} cannot send until its configuration is fixed: "
                f"{v['last_error']}",
                file=sys.stderr,
            )
    return EXIT_OK


def cmd_emulate(args: argparse.Namespace) -> int:
    from mailmux.emulator import SHAPES, run_emulator

    known = sorted({*SHAPES, "smtp"})  # smtp: an SMTP server, not an HTTP shape
    if args.shape not in known:
        raise CliError(f"--shape: unknown shape {args.shape!r}; known: {', '.join(known)}")
    run_emulator(args.shape, args.host, args.port, args.control_port)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from mailmux.demo import MIN_DURATION, run_demo

    if args.duration < MIN_DURATION:
        return _usage(f"--duration: at least {MIN_DURATION:g} seconds for the whole story")
    return run_demo(args.duration)


def cmd_config_check(args: argparse.Namespace) -> int:
    config: Config = load_config(args.path)
    names = ", ".join(f"{n} ({v.kind}, weight {v.weight:g})" for n, v in config.vendors.items())
    print(
        f"ok: listen {config.listen_host}:{config.listen_port}; store {config.store}; "
        f"vendors: {names}"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailmux", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run mailmux (embedded default without a config file)")
    serve.add_argument("-c", "--config", help="YAML file (default: ./mailmux.yaml if present)")
    serve.add_argument("--log-level", default=os.environ.get("MAILMUX_LOG_LEVEL", "INFO"))
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("MAILMUX_LOG_FORMAT", "text"),
        help="text lines, or one JSON object per line (env MAILMUX_LOG_FORMAT)",
    )
    serve.set_defaults(func=cmd_serve)

    def client(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=None, help="mailmux base URL (env MAILMUX_URL)")
        p.add_argument(
            "--api-key",
            default=os.environ.get("MAILMUX_API_KEY"),
            help="bearer key; for send --smtp the AUTH password (env MAILMUX_API_KEY)",
        )

    send = sub.add_parser("send", help="send one message and print where it went")
    client(send)
    send.add_argument("--from", dest="sender", required=True)
    send.add_argument("--to", action="append", required=True)
    send.add_argument("--cc", action="append")
    send.add_argument("--bcc", action="append")
    send.add_argument("--subject", default="")
    send.add_argument("--text")
    send.add_argument("--html")
    send.add_argument("--class", dest="traffic_class")
    send.add_argument("--deadline", type=float, help="seconds from now")
    send.add_argument("--idempotency-key")
    smtp = send.add_argument_group("over SMTP submission instead of the HTTP API")
    smtp.add_argument(
        "--smtp",
        nargs="?",
        const="",
        metavar="HOST:PORT",
        help="send over SMTP (default address: env MAILMUX_SMTP, else the configured smtp.listen)",
    )
    tls = smtp.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="STARTTLS before AUTH and MAIL")
    tls.add_argument("--tls", action="store_true", help="implicit TLS from the first byte")
    smtp.add_argument(
        "--user", help=f"AUTH user name: a client's name (default {DEFAULT_SMTP_USER!r})"
    )
    smtp.add_argument("--cafile", help="PEM certificate(s) to trust instead of the system's")
    send.set_defaults(func=cmd_send)

    status = sub.add_parser("status", help="vendors with weight, health, success rate, latency")
    client(status)
    status.set_defaults(func=cmd_status)

    from mailmux import cli_admin  # it imports this module's request helper

    cli_admin.add_commands(sub)

    emulate = sub.add_parser("emulate", help="run a local ESP emulator with fault injection")
    emulate.add_argument("--shape", required=True)
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, required=True)
    emulate.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="extra port for /_emulator/* that stays up while 'down'",
    )
    emulate.set_defaults(func=cmd_emulate)

    demo = sub.add_parser("demo", help="a failover drill against two emulated ESPs, live")
    demo.add_argument("--duration", type=float, default=40.0, help="seconds (default 40)")
    demo.set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file and print a summary")
    check.add_argument("path", nargs="?", default=None)
    check.set_defaults(func=cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "url", "unset") is None:
        args.url = _default_url()
    configure_logging(getattr(args, "log_level", "WARNING"), getattr(args, "log_format", "text"))
    try:
        code: int = args.func(args)
        return code
    except ConfigError as err:
        print(f"mailmux: invalid configuration:\n{err}", file=sys.stderr)
        return EXIT_FAILED
    except CliError as err:
        print(f"mailmux: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
