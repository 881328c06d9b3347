"""Raw-socket tools for the HTTP server tests: send bytes, read until EOF, parse the answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mailmux.app import App
from mailmux.config import Config

WAIT = 10.0  # the bound on every wait for the server


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def parse(raw: bytes) -> Answer:
    """One HTTP/1.x response (the first, if several arrived)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return Answer(status, headers, rest[:length])


class Conn:
    """One client connection over a raw socket to 127.0.0.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_eof(self, timeout: float = WAIT) -> bytes:
        """Everything up to the server's close (EOF or reset); fails after `timeout`."""
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                while chunk := await self.reader.read(65536):
                    chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)

    async def response(self, timeout: float = WAIT) -> Answer:
        """Read exactly one response with a Content-Length; the connection stays open."""
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            answer = parse(head)
            length = int(answer.headers.get("content-length", "0"))
            answer.body = await self.reader.readexactly(length)
        return answer

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection and read until the server closes it."""
    conn = await Conn.open(port)
    try:
        await conn.send(data)
        return await conn.until_eof()
    finally:
        await conn.close()


def get(path: str, *headers: str, close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def app_config(tmp_path: Path, *, api_keys: list[str], **limits: Any) -> Config:
    return Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "store": f"sqlite:///{tmp_path / 'server.db'}",
            "node_id": "test-node",
            "api_keys": api_keys,
            "limits": limits,
            "vendors": {"box": {"kind": "sandbox", "weight": 1}},
        }
    )


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[App]:
    """The whole App in this process, on a free port; stopped on the way out."""
    app = App(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


class Captured(logging.Handler):
    """Every record that reaches the root logger, formatted as a handler would (tracebacks too)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self, start: int = 0) -> list[str]:
        return [self.format(record) for record in self.records[start:]]


@contextlib.contextmanager
def capture_logs(level: int) -> Iterator[Captured]:
    """Root logger at `level` with a capturing handler; restored afterwards."""
    root = logging.getLogger()
    handler = Captured()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
