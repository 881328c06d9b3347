"""Streamed request bodies (`vendors/body.py`) and how the aiohttp transport sends them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from mailmux.vendors import body as body_module
from mailmux.vendors.base import (
    AiohttpTransport,
    HttpRequest,
    StreamedPayload,
    _exact_size,
)
from mailmux.vendors.body import (
    CHUNK,
    STREAM_FROM,
    Base64View,
    StreamedBody,
    base64_text,
    joined,
    json_body,
    sha256_hex,
)

LARGE = os.urandom(3 * CHUNK + 1000)  # several chunks and a ragged end


def wire(body: bytes | StreamedBody) -> bytes:
    """The bytes a body puts on the wire."""
    return body if isinstance(body, bytes) else b"".join(body.chunks())


def old_json(payload: Any) -> bytes:
    """What the vendors built before: each view's base64 string in the payload, then orjson."""
    return orjson.dumps(
        payload,
        default=lambda v: base64.b64encode(v.data).decode("ascii"),
    )


# -- Base64View and StreamedBody ----------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 2, 3, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + 2, 2 * CHUNK, 3 * CHUNK + 1000]
)
def test_a_view_encodes_chunk_by_chunk_to_the_whole_base64(size: int) -> None:
    data = LARGE[:size]
    view = Base64View(data)
    chunks = list(view.chunks())
    assert b"".join(chunks) == base64.b64encode(data)
    assert len(view) == len(base64.b64encode(data))
    assert all(len(c) <= CHUNK // 3 * 4 for c in chunks)
    assert len(chunks) == -(-size // CHUNK)


def test_a_body_is_its_parts_in_order_and_its_length_is_exact() -> None:
    body = StreamedBody([b'{"a":"', Base64View(LARGE), b'","b":', LARGE, b"}"])
    expected = b'{"a":"' + base64.b64encode(LARGE) + b'","b":' + LARGE + b"}"
    assert wire(body) == expected
    assert len(body) == body.size == len(expected)


def test_a_large_bytes_part_is_sent_as_slices_of_itself_not_copies() -> None:
    body = StreamedBody([b"head", LARGE])
    chunks = list(body.chunks())
    assert chunks[0] == b"head"
    slices = chunks[1:]
    assert all(isinstance(c, memoryview) and c.obj is LARGE for c in slices)
    assert all(len(c) <= CHUNK for c in slices)


def test_a_body_can_be_read_again_from_the_start() -> None:
    body = StreamedBody([b"x", Base64View(LARGE), LARGE])
    assert wire(body) == wire(body)


def test_the_hash_is_that_of_the_bytes_on_the_wire() -> None:
    body = StreamedBody([b"x", Base64View(LARGE), LARGE])
    assert sha256_hex(body) == hashlib.sha256(wire(body)).hexdigest()
    assert sha256_hex(b"small") == hashlib.sha256(b"small").hexdigest()


# -- base64_text and json_body -----------------------------------------------------------


def test_a_small_attachment_is_its_base64_string_as_before() -> None:
    text = base64_text(b"%PDF-1.4")
    assert text == base64.b64encode(b"%PDF-1.4").decode("ascii")
    just_under = os.urandom(STREAM_FROM - 1)
    assert base64_text(just_under) == base64.b64encode(just_under).decode("ascii")


def test_a_large_attachment_is_a_view_over_its_own_bytes() -> None:
    at_threshold = LARGE[:STREAM_FROM]
    view = base64_text(at_threshold)
    assert isinstance(view, Base64View) and view.data is at_threshold
    big = base64_text(LARGE)
    assert isinstance(big, Base64View) and big.data is LARGE


def test_without_views_json_body_is_orjsons_own_output() -> None:
    payload = {"subject": "Grüße ✓", "to": [{"email": "a@example.com"}], "n": 1}
    assert json_body(payload) == orjson.dumps(payload)


def test_a_payload_with_views_is_streamed_from_the_attachments_themselves() -> None:
    payload = {
        "subject": "big",
        "attachments": [
            {"content": base64_text(b"tiny"), "name": "first.txt"},
            {"content": base64_text(LARGE), "name": "big.bin"},
            {"content": Base64View(b"x"), "name": "last.txt"},
        ],
        "tail": "after",
    }
    built = json_body(payload)
    assert isinstance(built, StreamedBody)
    assert wire(built) == old_json(payload)
    assert len(built) == len(old_json(payload))
    views = [p for p in built.parts if isinstance(p, Base64View)]
    assert [v.data for v in views] == [LARGE, b"x"]
    assert views[0].data is LARGE


def test_what_json_cannot_hold_still_fails_as_with_orjson() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_body({"when": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_body({"a": Base64View(LARGE), "when": object()})


def test_content_that_holds_the_placeholder_is_refused_rather_than_misplaced() -> None:
    payload = {"text": body_module._PLACEHOLDER, "a": Base64View(LARGE)}
    with pytest.raises(ValueError, match="placeholder"):
        json_body(payload)


# -- joined (multipart bodies) -----------------------------------------------------------


def test_a_small_body_is_joined_into_bytes() -> None:
    assert joined([b"--b\r\n", b"content", b"\r\n--b--\r\n"]) == b"--b\r\ncontent\r\n--b--\r\n"


def test_a_large_body_keeps_its_parts_as_they_are() -> None:
    parts = [b"--b\r\nheaders\r\n\r\n", LARGE, b"\r\n--b--\r\n"]
    built = joined(parts)
    assert isinstance(built, StreamedBody)
    assert built.parts[1] is LARGE
    assert wire(built) == b"".join(parts)


def test_a_single_large_part_stays_the_bytes_it_is() -> None:
    assert joined([LARGE]) is LARGE


# -- the send path: exact size and the aiohttp payload ------------------------------------


def test_only_a_bytes_body_is_copied_to_its_exact_size() -> None:
    streamed = HttpRequest("POST", "http://x", {}, StreamedBody([b"a", LARGE]))
    assert _exact_size(streamed) is streamed
    small = HttpRequest("POST", "http://x", {}, orjson.dumps({"a": 1}))
    copied = _exact_size(small)
    assert copied.body == small.body and copied.body is not small.body


class RecordingWriter:
    """Enough of aiohttp's stream writer for a payload: keeps what it is given."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes | memoryview) -> None:
        self.chunks.append(bytes(chunk))


async def test_the_payload_writes_the_whole_body_each_time_it_is_written() -> None:
    body = StreamedBody([b"{", Base64View(LARGE), LARGE, b"}"])
    payload = StreamedPayload(body)
    assert payload.size == len(body)
    first, second = RecordingWriter(), RecordingWriter()
    await payload.write_with_length(first, None)  # type: ignore[arg-type]
    await payload.write(second)  # type: ignore[arg-type]
    assert b"".join(first.chunks) == b"".join(second.chunks) == wire(body)
    assert not payload.consumed


async def test_the_payload_stops_at_the_length_it_is_given() -> None:
    body = StreamedBody([b"{", Base64View(LARGE), b"}"])
    writer = RecordingWriter()
    await StreamedPayload(body).write_with_length(writer, CHUNK + 7)  # type: ignore[arg-type]
    assert b"".join(writer.chunks) == wire(body)[: CHUNK + 7]


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A server on 127.0.0.1 that records each request's framing headers and body."""
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(
            {
                "content-length": request.headers.get("Content-Length"),
                "transfer-encoding": request.headers.get("Transfer-Encoding"),
                "content-type": request.headers.get("Content-Type"),
                "body": await request.read(),
            }
        )
        return web.Response(status=202)

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/send", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/send", seen
    await runner.cleanup()


async def test_a_streamed_request_carries_its_exact_length_and_can_be_sent_again(
    echo: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = echo
    body = StreamedBody([b'{"content":"', Base64View(LARGE), b'","raw":"', LARGE, b'"}'])
    request = HttpRequest("POST", url, {"Content-Type": "application/json"}, body)
    transport = AiohttpTransport()
    try:
        for _ in range(2):  # a retry sends the same request object again
            response = await transport(request, timeout=10.0)
            assert response.status == 202
    finally:
        await transport.close()
    assert len(seen) == 2
    for received in seen:
        assert received["body"] == wire(body)
        assert received["content-length"] == str(len(wire(body)))
        assert received["transfer-encoding"] is None
        assert received["content-type"] == "application/json"


async def test_aiohttp_may_write_the_payload_again_on_a_fresh_connection() -> None:
    # aiohttp resends an idempotent request whose kept-alive connection was dropped
    # (mailmux's POSTs are never resent that way, but the payload must allow it): the
    # second request finds its connection closed and goes again on a new one.
    bodies: list[bytes] = []
    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:  # the client closed its pool
                    return
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                assert length is not None and b"transfer-encoding" not in head.lower()
                bodies.append(await reader.readexactly(int(length[1])))
                if len(bodies) == 2:  # hang up instead of answering, as a stale connection does
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    body = StreamedBody([b"{", Base64View(LARGE), LARGE, b"}"])
    request = HttpRequest("PUT", f"http://127.0.0.1:{port}/", {}, body)
    transport = AiohttpTransport()
    try:
        assert (await transport(request, timeout=10.0)).status == 200
        assert (await transport(request, timeout=10.0)).status == 200
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
        await asyncio.gather(*handlers)
    assert bodies == [wire(body)] * 3
