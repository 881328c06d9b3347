"""A Server-Sent Events reader for the dashboard's stream, over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson


@dataclass(frozen=True)
class Event:
    name: str
    data: Any


class EventStream:
    """The events of one open `GET /dashboard/stream`, read as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next(self, timeout: float = 5.0) -> Event | None:
        """The next event; None when the server ended the stream."""
        name, data = "message", []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if line == "":
                    if data:
                        return Event(name, orjson.loads("\n".join(data)))
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)

    async def until(self, name: str, timeout: float = 5.0) -> Event:
        """Skip to the next event called `name`."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                assert event is not None, f"the stream ended before a {name!r} event"
                if event.name == name:
                    return event


@contextlib.asynccontextmanager
async def open_stream(
    http: aiohttp.ClientSession, base: str, key: str | None = None
) -> AsyncIterator[EventStream]:
    """An open stream; the caller checks `stream.response.status` first."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.get(f"{base}/dashboard/stream", headers=headers) as response:
        yield EventStream(response)
