"""Scaffolding shared by the tests that drive an ESP emulator over real sockets
(tests/test_<esp>_emulator.py and test_emulator.py).

Each of those files wants the same three fixtures — an emulator of its ESP's shape on
127.0.0.1, mailmux's adapter pointed at it, an HTTP session for hand-made requests —
and the same few moves on the emulator's control API. The fixtures come from
factories, so a file names its ESP in one line each:

    emulator = emulator_fixture("mailgun")
    vendor = vendor_fixture(MailgunVendor, "backup", api_key=API_KEY, domain=DOMAIN)
    http = http_fixture()
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson
import pytest
from vendor_kit import PDF, PNG

from mailmux.emulator import Emulator
from mailmux.message import Address, Attachment, Message
from mailmux.vendors.base import AiohttpTransport, HttpResponse, Vendor

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureFunctionDefinition

TIMEOUT = 5.0  # an attempt's timeout against a local emulator: ample, so only faults fail

VendorT = TypeVar("VendorT", bound=Vendor)


def emulator_fixture(shape: str, *, seed: int | None = None) -> FixtureFunctionDefinition:
    """An `emulator` fixture: `shape` served on a free 127.0.0.1 port for one test. With a
    `seed`, which requests a fault `rate` hits is the same on every run."""

    @pytest.fixture(name="emulator")
    async def emulator() -> AsyncIterator[Emulator]:
        server = Emulator(shape, rng=None if seed is None else random.Random(seed))
        await server.start()
        yield server
        await server.stop()

    return emulator


def vendor_fixture(
    build: Callable[..., VendorT], name: str, **settings: Any
) -> FixtureFunctionDefinition:
    """A `vendor` fixture: `build(name, AiohttpTransport(), base_url=…, **settings)` aimed
    at the `emulator` fixture, closed after the test."""

    @pytest.fixture(name="vendor")
    async def vendor(emulator: Emulator) -> AsyncIterator[VendorT]:
        built = build(
            name, AiohttpTransport(), base_url=f"http://127.0.0.1:{emulator.port}", **settings
        )
        yield built
        await built.close()

    return vendor


def http_fixture() -> FixtureFunctionDefinition:
    """An `http` fixture: one aiohttp session for a test's hand-made requests."""

    @pytest.fixture(name="http")
    async def http() -> AsyncIterator[aiohttp.ClientSession]:
        async with aiohttp.ClientSession() as session:
            yield session

    return http


# -- the emulator's control API and its ESP routes ----------------------------------------


async def read_back(http: aiohttp.ClientSession, port: int) -> list[dict[str, Any]]:
    """What the emulator kept, oldest first, as GET /_emulator/messages lists it."""
    async with http.get(f"http://127.0.0.1:{port}/_emulator/messages") as response:
        assert response.status == 200
        kept: list[dict[str, Any]] = await response.json()
        return kept


async def set_faults(http: aiohttp.ClientSession, port: int, faults: Any) -> None:
    """Replace the emulator's faults through POST /_emulator/faults."""
    url = f"http://127.0.0.1:{port}/_emulator/faults"
    async with http.post(url, data=orjson.dumps(faults)) as response:
        assert response.status == 200, await response.text()


async def post_to(
    http: aiohttp.ClientSession, port: int, path: str, body: Any, headers: Mapping[str, str]
) -> HttpResponse:
    """A hand-made request to an ESP route: `body` goes as it is when it is bytes, as JSON
    otherwise. The answer comes back as an adapter's transport would see it."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(f"http://127.0.0.1:{port}{path}", data=data, headers=headers) as answer:
        lowered = {k.lower(): v for k, v in answer.headers.items()}
        return HttpResponse(answer.status, lowered, await answer.read())


def json_reply(answer: HttpResponse) -> Any:
    """The answer's JSON body; an answer not labelled application/json fails the test, as
    it would trip an ESP's own client."""
    mimetype = answer.headers.get("content-type", "").partition(";")[0].strip()
    assert mimetype == "application/json", answer.headers.get("content-type")
    return orjson.loads(answer.body)


# -- messages that survive a round trip ------------------------------------------------------


def quoted_names_message(**changes: Any) -> Message:
    """A rich message whose names need quoting in an address string (a comma in the
    sender's, quotes in the Reply-To's), with an inline image and a non-ASCII text
    attachment: what ESPs that take addresses as strings must carry intact."""
    fields: dict[str, Any] = {
        "sender": Address("noreply@example.com", "Zoë Shop, Inc."),
        "to": (Address("ana@example.org", "Ana María"), Address("bo@example.net")),
        "cc": (Address("chen@example.com", "陈伟"),),
        "bcc": (Address("audit@example.com"),),
        "reply_to": (Address("help@example.com", 'The "Help" Desk'),),
        "subject": "Receipt №42 ✓",
        "text": "Thanks.\n",
        "html": '<p>Thanks. <img src="cid:logo@x"></p>',
        "headers": {"X-Order": "42", "List-Unsubscribe": "<mailto:u@example.com>"},
        "attachments": (
            Attachment("logo.png", PNG, "image/png", inline=True, content_id="logo@x"),
            Attachment("reçu.txt", "déjà payé".encode(), "text/plain"),
        ),
        "tags": ("receipt", "spring"),
        "metadata": {"order_id": "42", "customer": "c-7"},
    }
    fields.update(changes)
    return Message(**fields)


def numbered_message(n: int = 0, **changes: Any) -> Message:
    """A rich message numbered `n` (its first recipient, subject, X-Order header and order
    metadata carry the number), with a comma in a recipient's name, two Reply-To
    addresses, an inline image and a PDF."""
    fields: dict[str, Any] = {
        "sender": Address("noreply@example.com", "Zoë Shop"),
        "to": (Address(f"ana{n}@example.org", "Ana María"), Address("bo@example.net", "Bo, Jr.")),
        "cc": (Address("chen@example.com", "陈伟"),),
        "bcc": (Address("audit@example.com"),),
        "reply_to": (Address("help@example.com", "Help ✉"), Address("desk@example.com")),
        "subject": f"Receipt №{n}",
        "text": "Thanks.\n",
        "html": '<p>Thanks. <img src="cid:logo@x"></p>',
        "headers": {"X-Order": str(n), "List-Unsubscribe": "<mailto:u@example.com>"},
        "attachments": (
            Attachment("logo.png", PNG, "image/png", inline=True, content_id="logo@x"),
            Attachment("reçu.pdf", PDF, "application/pdf"),
        ),
        "tags": ("receipt", "eu"),
        "metadata": {"order": str(n), "customer": "c-7"},
    }
    fields.update(changes)
    return Message(**fields)
