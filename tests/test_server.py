"""The HTTP server from outside: malformed requests, stalled and excess connections, error shapes.

Everything goes over real sockets on 127.0.0.1 to the whole App (in this
process, so every log record can be captured) or to a `mailmux serve`
process (uvloop, the real logging set-up).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest
from harness import MailmuxProcess, eventually, fast_config
from server_kit import (
    WAIT,
    Conn,
    app_config,
    capture_logs,
    exchange,
    get,
    parse,
    running,
)

from mailmux.ingress.listener import LOG_LINES, fit_file_limit

KEY = "mm-live-7f3a9c2e41d8b6"
AUTH = f"Authorization: Bearer {KEY}"
B = KEY.encode()
HEAD = b"Host: 127.0.0.1\r\n"
POST_CHUNKED = (
    b"POST /v1/messages HTTP/1.1\r\n" + HEAD + AUTH.encode() + b"\r\n"
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)

# Requests aiohttp's parser refuses, each carrying the API key where a log line quoting
# the request would show it. Each entry is sent as the packets listed.
MALFORMED: dict[str, list[bytes]] = {
    "control character after the key": [
        b"GET /v1/health HTTP/1.1\r\n" + HEAD + b"Authorization: Bearer " + B + b"\x01\r\n\r\n"
    ],
    "NUL after the key": [
        b"GET /v1/health HTTP/1.1\r\n" + HEAD + b"Authorization: Bearer " + B + b"\x00\r\n\r\n"
    ],
    "9,000-byte header": [
        b"GET /v1/health HTTP/1.1\r\n"
        + HEAD
        + b"Authorization: Bearer "
        + B
        + b"A" * 9000
        + b"\r\n\r\n"
    ],
    "bad byte in the path, key in the query": [
        b"GET /v1/health\x01?api_key=" + B + b" HTTP/1.1\r\n" + HEAD + b"\r\n"
    ],
    "request line too long": [
        b"GET /v1/health?api_key=" + B + b"&pad=" + b"A" * 9000 + b" HTTP/1.1\r\n" + HEAD + b"\r\n"
    ],
    "bad method": [b"G\x01T /v1/health?api_key=" + B + b" HTTP/1.1\r\n" + HEAD + b"\r\n"],
    "bad version": [b"GET /v1/health?api_key=" + B + b" HTTP/9.Z\r\n" + HEAD + b"\r\n"],
    "bad header name": [b"GET /v1/health HTTP/1.1\r\n" + HEAD + b"X-Key " + B + b": 1\r\n\r\n"],
    "folded Authorization": [
        b"GET /v1/health HTTP/1.1\r\n" + HEAD + b"Authorization: Bearer\r\n " + B + b"\r\n\r\n"
    ],
    "bad Content-Length": [
        b"POST /v1/messages HTTP/1.1\r\n" + HEAD + b"Content-Length: 12" + B + b"\r\n\r\n"
    ],
    "bad chunk size": [POST_CHUNKED + b"ZZ" + B + b"\r\n"],
    "bad chunk size in a later packet": [POST_CHUNKED + b'5\r\n{"a":\r\n', b"ZZ" + B + b"\r\n"],
    "TLS on the plain port": [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + B],
}

LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]


async def send_packets(port: int, packets: list[bytes]) -> bytes:
    conn = await Conn.open(port)
    try:
        for packet in packets:
            await conn.send(packet)
        return await conn.until_eof()
    finally:
        await conn.close()


# ---------------------------------------------------------------- credentials and the log


@pytest.mark.parametrize("level", LEVELS, ids=logging.getLevelName)
async def test_malformed_requests_log_one_short_line_without_the_key(
    tmp_path: Path, level: int
) -> None:
    with capture_logs(level) as logs:
        async with running(app_config(tmp_path, api_keys=[KEY])) as app:
            assert app.port is not None
            for case, packets in MALFORMED.items():
                start = len(logs.records)
                answer = parse(await send_packets(app.port, packets))

                assert answer.status == 400, case
                assert answer.headers["content-type"] == "application/json", case
                assert answer.json()["error"]["code"] == "bad_request", case
                assert KEY not in answer.body.decode("latin-1"), case
                lines = logs.texts(start)
                assert len(lines) == (1 if level <= logging.WARNING else 0), (case, lines)
                for record in logs.records[start:]:
                    assert record.exc_info is None and record.stack_info is None, case
                    assert len(record.getMessage()) <= 100, (case, record.getMessage())
                    assert record.getMessage().startswith("bad request from 127.0.0.1: ")
        everything = "\n".join(logs.texts())
    assert KEY not in everything


async def test_a_flood_of_malformed_requests_logs_a_few_lines_and_a_count(
    tmp_path: Path,
) -> None:
    flood = 1000
    slots = asyncio.Semaphore(50)

    async def one() -> int:
        async with slots:
            return parse(await exchange(app.port or 0, MALFORMED["bad header name"][0])).status

    with capture_logs(logging.DEBUG) as logs:
        async with running(app_config(tmp_path, api_keys=[KEY])) as app:
            statuses = await asyncio.gather(*(one() for _ in range(flood)))
            during = logs.texts()
        after = logs.texts()

    assert statuses == [400] * flood
    assert len(during) == LOG_LINES
    assert after[LOG_LINES:] == [
        f"WARNING mailmux.server: lines like the above left out: {flood - LOG_LINES} "
        f"(at most {LOG_LINES} every 60 s)"
    ]


async def test_a_mailmux_process_logs_no_key_at_debug(tmp_path: Path) -> None:
    """`mailmux serve` as shipped: uvloop, the command's logging set-up, DEBUG level."""
    config = fast_config(
        tmp_path / "spool.db", {"box": {"kind": "sandbox", "weight": 1}}, api_keys=[KEY]
    )
    proc = MailmuxProcess(config, tmp_path, env={"MAILMUX_LOG_LEVEL": "DEBUG"})
    await proc.start()
    try:
        port = int(config["listen"].rpartition(":")[2])
        for case, packets in MALFORMED.items():
            assert parse(await send_packets(port, packets)).status == 400, case
        ok = await exchange(port, get("/v1/health", AUTH, close=True))
        assert parse(ok).status == 200
    finally:
        assert await proc.stop() == 0
    log = "".join(proc.log)
    assert KEY not in log
    assert "Traceback" not in log
    bad = [line for line in proc.log if "bad request from 127.0.0.1: " in line]
    assert len(bad) == len(MALFORMED), log
    assert all(len(line) < 160 for line in bad), bad


async def test_a_mailmux_process_bounds_its_connections(tmp_path: Path) -> None:
    """The cap and the header deadline under `mailmux serve` (uvloop)."""
    config = fast_config(
        tmp_path / "spool.db",
        {"box": {"kind": "sandbox", "weight": 1}},
        limits={"max_connections": 3, "header_timeout": 1.0},
    )
    proc = MailmuxProcess(config, tmp_path)
    await proc.start()
    try:
        port = int(config["listen"].rpartition(":")[2])
        half_open = [await Conn.open(port) for _ in range(3)]
        for conn in half_open:  # admitted: the answer proves it; then half a request
            await conn.send(get("/v1/health"))
            assert (await conn.response()).status == 200
            await conn.send(b"GET /v1/health HTTP/1.1\r\nHo")

        extra = await Conn.open(port)
        assert parse(await extra.until_eof()).status == 503
        await extra.close()

        assert await asyncio.gather(*(c.until_eof() for c in half_open)) == [b""] * 3
        for conn in half_open:
            await conn.close()

        async def a_new_connection_is_served() -> bool:
            raw = await exchange(port, get("/v1/health", close=True))
            return bool(raw) and parse(raw).status == 200

        await eventually(a_new_connection_is_served, timeout=WAIT, what="freed places")
    finally:
        assert await proc.stop() == 0


# ---------------------------------------------------------------- stalled connections


async def test_half_sent_headers_are_closed_after_header_timeout(tmp_path: Path) -> None:
    async with running(app_config(tmp_path, api_keys=[], header_timeout=0.5)) as app:
        assert app.port is not None
        conn = await Conn.open(app.port)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await conn.send(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")

        assert await conn.until_eof() == b""  # closed without an answer
        assert loop.time() - began >= 0.45
        await conn.close()


async def test_a_keep_alive_connection_idles_until_idle_timeout_not_header_timeout(
    tmp_path: Path,
) -> None:
    config = app_config(tmp_path, api_keys=[], header_timeout=0.3, idle_timeout=1.2)
    async with running(config) as app:
        assert app.port is not None
        conn = await Conn.open(app.port)
        loop = asyncio.get_running_loop()
        await conn.send(get("/v1/health"))
        assert (await conn.response()).status == 200

        await asyncio.sleep(0.6)  # idle for twice header_timeout: what is under test
        await conn.send(get("/v1/health"))
        assert (await conn.response()).status == 200  # still open, still served

        answered = loop.time()
        assert await conn.until_eof() == b""  # idle past idle_timeout: closed
        assert loop.time() - answered >= 1.1
        await conn.close()


async def test_the_header_clock_starts_at_the_next_requests_first_byte(tmp_path: Path) -> None:
    config = app_config(tmp_path, api_keys=[], header_timeout=0.4, idle_timeout=30)
    async with running(config) as app:
        assert app.port is not None
        conn = await Conn.open(app.port)
        loop = asyncio.get_running_loop()
        await conn.send(get("/v1/health"))
        assert (await conn.response()).status == 200
        await asyncio.sleep(0.5)  # idle longer than header_timeout: allowed

        began = loop.time()
        await conn.send(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")

        assert await conn.until_eof() == b""  # closed header_timeout after the first byte
        assert 0.35 <= loop.time() - began < 5
        await conn.close()


async def test_a_body_sent_after_its_headers_on_a_kept_alive_connection_has_body_timeout(
    tmp_path: Path,
) -> None:
    body = b'{"from": "a@example.com", "to": ["b@example.net"], "subject": "s", "text": "t"}'
    config = app_config(tmp_path, api_keys=[], header_timeout=0.3, body_timeout=5)
    async with running(config) as app:
        assert app.port is not None
        conn = await Conn.open(app.port)
        await conn.send(get("/v1/health"))
        assert (await conn.response()).status == 200
        await conn.send(
            b"POST /v1/messages HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        await asyncio.sleep(0.5)  # the body comes later than header_timeout: allowed
        await conn.send(body)

        assert (await conn.response()).status == 200
        await conn.close()


async def test_a_slow_body_is_dropped_after_body_timeout(tmp_path: Path) -> None:
    config = app_config(tmp_path, api_keys=[KEY], header_timeout=30, body_timeout=0.5)
    with capture_logs(logging.DEBUG) as logs:
        async with running(config) as app:
            assert app.port is not None
            conn = await Conn.open(app.port)
            loop = asyncio.get_running_loop()
            began = loop.time()
            await conn.send(
                b"POST /v1/messages HTTP/1.1\r\n" + HEAD + AUTH.encode() + b"\r\n"
                b'Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"from": '
            )

            assert await conn.until_eof() == b""
            assert loop.time() - began >= 0.45
            await conn.close()
            lines = logs.texts()
    assert lines == [
        "INFO mailmux.server: closed a connection from 127.0.0.1: "
        "request body incomplete after 0.5 s (limits.body_timeout)"
    ]


async def test_body_timeout_counts_for_each_request_on_its_own(tmp_path: Path) -> None:
    body = b'{"from": "a@example.com", "to": ["b@example.net"], "subject": "s", "text": "t"}'
    head = (
        b"POST /v1/messages HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    pieces = [body[:30], body[30:60], body[60:]]
    async with running(app_config(tmp_path, api_keys=[], body_timeout=1.5)) as app:
        assert app.port is not None
        conn = await Conn.open(app.port)
        loop = asyncio.get_running_loop()
        began = loop.time()
        for _ in range(3):  # each body takes ~0.6 s, the three more than body_timeout
            await conn.send(head)
            for piece in pieces:
                await asyncio.sleep(0.2)  # a slow client, not synchronization
                await conn.send(piece)
            answer = await conn.response()
            assert (answer.status, answer.json()["state"]) == (200, "sent")
        assert loop.time() - began > 1.5

        await conn.send(head + pieces[0])  # and then nothing more
        stalled = loop.time()
        assert await conn.until_eof() == b""
        assert loop.time() - stalled >= 1.4
        await conn.close()


async def test_requests_are_served_while_200_half_open_connections_wait_then_those_close(
    tmp_path: Path,
) -> None:
    async with running(app_config(tmp_path, api_keys=[], header_timeout=2.0)) as app:
        assert app.port is not None
        half_open = [await Conn.open(app.port) for _ in range(200)]
        for conn in half_open:
            await conn.send(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")

        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                async with session.get(f"http://127.0.0.1:{app.port}/v1/health") as response:
                    assert response.status == 200

        closed = await asyncio.gather(*(conn.until_eof() for conn in half_open))
        assert closed == [b""] * 200
        for conn in half_open:
            await conn.close()


# ---------------------------------------------------------------- the connection cap


async def test_connections_beyond_max_connections_are_refused_while_open_ones_are_served(
    tmp_path: Path,
) -> None:
    with capture_logs(logging.DEBUG) as logs:
        async with running(app_config(tmp_path, api_keys=[], max_connections=5)) as app:
            assert app.port is not None
            port = app.port
            admitted = [await Conn.open(port) for _ in range(5)]
            for conn in admitted:  # an answer proves the server admitted the connection
                await conn.send(get("/v1/health"))
                assert (await conn.response()).status == 200

            extra = await Conn.open(port)  # sends nothing, so no reset can hide the answer
            answer = parse(await extra.until_eof())
            await extra.close()
            assert answer.status == 503
            assert answer.json()["error"]["code"] == "too_many_connections"

            await admitted[0].send(get("/v1/health"))  # an open connection is still served
            assert (await admitted[0].response()).status == 200

            await admitted[1].close()  # frees a place

            async def a_new_connection_is_served() -> bool:
                raw = await exchange(port, get("/v1/health", close=True))
                return bool(raw) and parse(raw).status == 200

            await eventually(a_new_connection_is_served, timeout=WAIT, what="a freed place")
            for conn in admitted:
                await conn.close()
    refusals = [t for t in logs.texts() if "refused a connection" in t]
    assert refusals[0] == (
        "WARNING mailmux.server: refused a connection from 127.0.0.1: "
        "5 connections open (limits.max_connections)"
    )


# ---------------------------------------------------------------- every error is JSON


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (get("/v1/nowhere?x=1", close=True), 404, "not_found"),
        (b"DELETE /v1/health HTTP/1.1\r\n" + HEAD + b"Connection: close\r\n\r\n", 405, None),
        (b"GET /v1/health HTTP/1.1 extra\r\n" + HEAD + b"\r\n", 400, "bad_request"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HEAD + b"\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\n" + HEAD + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 400, "bad_request"),
        (
            b"POST /v1/messages HTTP/1.1\r\n" + HEAD + b"Expect: a-pony\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
            417,
            "expectation_failed",
        ),
    ],
    ids=["404", "405", "bad request line", "long URL", "long header", "417"],
)
async def test_errors_before_any_route_are_json(
    tmp_path: Path, request_bytes: bytes, status: int, code: str | None
) -> None:
    async with running(app_config(tmp_path, api_keys=[])) as app:
        assert app.port is not None
        answer = parse(await exchange(app.port, request_bytes))

    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] == code or code is None
    if status == 405:
        assert error["code"] == "method_not_allowed"
        assert answer.headers["allow"] == "GET,HEAD"
    if status == 404:
        assert error["message"] == "no route for GET /v1/nowhere"


async def test_405_keeps_the_allow_header_and_413_is_json(tmp_path: Path) -> None:
    config = app_config(tmp_path, api_keys=[], max_message_bytes=1000, max_request_bytes=2000)
    async with running(config) as app, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{app.port}"
        async with session.get(f"{url}/v1/messages") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
            assert response.content_type == "application/json"
            assert (await response.json())["error"]["code"] == "method_not_allowed"
        async with session.post(f"{url}/v1/messages", data=b"x" * 3000) as response:
            assert response.status == 413
            assert response.content_type == "application/json"
            assert (await response.json())["error"]["code"] == "request_too_large"
        async with session.post(f"{url}/v1/messages/abc") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "GET,HEAD"


# ---------------------------------------------------------------- the open-file limit


class FakeLimits:
    """resource.getrlimit/setrlimit for RLIMIT_NOFILE, without touching the process."""

    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard

    def getrlimit(self, which: int) -> tuple[int, int]:
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        if limits[0] > self.hard:
            raise ValueError("not allowed to raise the limit above the hard limit")
        self.soft = limits[0]


@pytest.mark.parametrize(
    ("soft", "hard", "left", "soft_after"),
    [
        (1024, 1_000_000, None, 4096 + 1024),  # raised to fit
        (1024, 2048, 2048, 2048),  # raised as far as allowed, still too low
        (100_000, 100_000, None, 100_000),  # already fits
    ],
)
def test_the_open_file_limit_is_raised_to_fit_max_connections(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, left: int | None, soft_after: int
) -> None:
    import resource

    fake = FakeLimits(soft, hard)
    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)

    assert fit_file_limit(4096) == left
    assert fake.soft == soft_after
