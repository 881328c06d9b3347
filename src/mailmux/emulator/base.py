"""What an ESP *shape* gives the emulator: the one place an ESP's wire contract lives.

The server owns everything shape-independent (ports, faults, storage, the
`/_emulator/*` control routes); a shape only says which routes are the ESP's
send API, how that ESP checks a request, and how it words its answers. Adding
an ESP to the emulator means one module implementing `Shape` plus one entry
in `shapes.SHAPES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from aiohttp import web

from mailmux.vendors.inbound import Reply

#: (HTTP method, path in aiohttp's route syntax), e.g. ("POST", "/v3/{domain}/messages").
Route = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Received:
    """A request the shape accepted: what the emulator stores and lists.

    `body` is the request as a JSON document (bytes): shapes whose ESP speaks
    JSON pass the request body through untouched, so storing costs no copy.
    """

    body: bytes
    headers: Mapping[str, str]


class Shape(Protocol):
    """One ESP's send API as the emulator serves it."""

    @property
    def routes(self) -> Sequence[Route]:
        """The ESP API routes; faults apply to these and only these."""
        ...

    async def receive(self, request: web.Request) -> Received | web.Response:
        """Check a request like the ESP would: `Received` to accept, or the ESP's refusal."""
        ...

    def accepted(self, message_id: str) -> web.Response:
        """The ESP's success answer carrying the id the emulator assigned."""
        ...

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        """An injected error status, with the body and headers this ESP would send."""
        ...


ShapeFactory = Callable[[], Shape]


def reply_response(reply: Reply) -> web.Response:
    """A shape's `Reply` (the ESP's words, shared with the ingress) as the emulator sends it."""
    return web.Response(status=reply.status, body=reply.body, headers=dict(reply.headers))


def status_phrase(status: int) -> str:
    """The reason phrase of an HTTP status, for the text of an injected fault."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
