"""`--log-format json`: one JSON object per line, structured fields, never a body or a key."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from shaped_kit import CLIENT_KEY, VENDOR_SETTINGS, router

from mailmux.cli import build_parser
from mailmux.config import load_config
from mailmux.logs import JsonFormatter

BODY = "secret-body-text-4711"
MESSAGE = {"from": "app@shop.example", "to": ["user@example.net"], "subject": "Hi", "text": BODY}


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What mailmux's loggers write, through the JSON formatter, at DEBUG."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("mailmux")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_json_lines_carry_decisions_and_no_body_or_key(
    tmp_path: Path, captured: io.StringIO
) -> None:
    async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}) as mux:
        await mux.faults("a", {"down": True})
        async with aiohttp.ClientSession() as http:
            for _ in range(40):  # a, tried first half the time, fails 5 in a row
                async with http.post(
                    f"{mux.url}/v1/messages",
                    json=MESSAGE,
                    headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                ) as answer:
                    assert answer.status == 200

    text = captured.getvalue()
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert lines
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= line.keys()
    attempts = [line for line in lines if line.get("outcome") and line.get("message_id")]
    assert {line["vendor"] for line in attempts} == {"a", "b"}
    ejected = [line for line in lines if line.get("event") == "Ejected"]
    assert [(line["vendor"], line["reason"]) for line in ejected] == [("a", "consecutive_failures")]
    for secret in (BODY, CLIENT_KEY, VENDOR_SETTINGS["sendgrid"]["api_key"]):
        assert secret not in text


def test_serve_takes_the_log_format_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert build_parser().parse_args(["serve"]).log_format == "text"
    assert build_parser().parse_args(["serve", "--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("MAILMUX_LOG_FORMAT", "json")
    assert build_parser().parse_args(["serve"]).log_format == "json"


def test_the_log_format_variable_is_not_read_as_a_config_override() -> None:
    loaded = load_config(None, env={"MAILMUX_LOG_FORMAT": "json"})

    assert loaded.vendors  # the embedded default, with no "unknown key log_format" error
