"""Scaffolding shared by the per-ESP adapter tests (tests/test_<esp>.py).

Each ESP's tests check the same things the same way: a rich message becomes one exact
request, that request fits the ESP's own contract, and every answer maps to an outcome.
What they stand on lives here once, so the ESP files hold only what is the ESP's own: a
transport that answers from a script, the sample messages and bytes, the wall clock the
vendors read, the contract copies under tests/contracts, and (for SES) an environment
with no AWS credentials in it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
import pytest
from jsonschema.validators import validator_for  # type: ignore[import-untyped]

from mailmux.message import Address, Attachment, Message
from mailmux.vendors.base import HttpRequest, HttpResponse, TransportError

CONTRACTS = Path(__file__).parent / "contracts"
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z: the wall clock every vendor under test reads
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR-logo"
PDF = b"%PDF-1.4\n% receipt\n"
#: mailmux's id of the message under test, as the Deliverer hands it to every attempt.
MESSAGE_ID = "018f3a2b4c5d6e7f8091a2b3c4d5"


class FakeTransport:
    """Answers every request with one canned response, or raises one canned error, and
    remembers each request with its timeout.

    The caller gives the answer, so each ESP's file states what its ESP says on success.
    """

    def __init__(self, answer: HttpResponse | TransportError) -> None:
        self.answer = answer
        self.calls: list[tuple[HttpRequest, float]] = []

    async def __call__(self, request: HttpRequest, timeout: float) -> HttpResponse:
        self.calls.append((request, timeout))
        if isinstance(self.answer, TransportError):
            raise self.answer
        return self.answer

    async def close(self) -> None:
        pass


class _Clocked(Protocol):
    clock: Callable[[], float]


ClockedT = TypeVar("ClockedT", bound=_Clocked)
ClockedT_co = TypeVar("ClockedT_co", bound=_Clocked, covariant=True)


def at_now(vendor: ClockedT) -> ClockedT:
    """`vendor` with its wall clock stopped at NOW, so HTTP-date and epoch Retry-After
    hints turn into exact seconds."""
    vendor.clock = lambda: NOW
    return vendor


class VendorFactory(Protocol[ClockedT_co]):
    """What `vendor_factory` returns: `vendor()`, `vendor(transport)`, `vendor(base_url=…)`."""

    def __call__(self, transport: FakeTransport | None = None, **settings: Any) -> ClockedT_co: ...


def vendor_factory(
    build: Callable[..., ClockedT], name: str, accepted: HttpResponse, **defaults: Any
) -> VendorFactory[ClockedT]:
    """An ESP file's `vendor(transport=None, **settings)`: `build(name, transport,
    **defaults)` with `settings` over the defaults and its clock at NOW. Without a
    transport it gets one that answers every request with `accepted`."""

    def vendor(transport: FakeTransport | None = None, **settings: Any) -> ClockedT:
        built = build(name, transport or FakeTransport(accepted), **{**defaults, **settings})
        return at_now(built)

    return vendor


def rich_message(**changes: Any) -> Message:
    """Every field an ESP may carry, with non-ASCII names, an inline image, a PDF and a
    repeated tag; `changes` replace fields. The defaults are built afresh on each call."""
    fields: dict[str, Any] = {
        "sender": Address("noreply@example.com", "Zoë Ålander"),
        "to": (Address("ana@example.org", "Ana María"), Address("bo@example.net")),
        "cc": (Address("chen@example.com", "陈伟"),),
        "bcc": (Address("audit@example.com"),),
        "reply_to": (Address("support@example.com", "Support ✉"),),
        "subject": "Your receipt — №42 ✓",
        "text": "Thanks for your order.\n",
        "html": '<p>Thanks! <img src="cid:logo@x"></p>',
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
        "attachments": (
            Attachment("logo.png", PNG, "image/png", inline=True, content_id="logo@x"),
            Attachment("reçu.pdf", PDF, "application/pdf"),
        ),
        "tags": ("receipt", "spring", "receipt"),
        "metadata": {"order_id": "42", "customer": "c-7"},
        "idempotency_key": "order-42",
    }
    fields.update(changes)
    return Message(**fields)


def minimal_message(**changes: Any) -> Message:
    """One sender, one recipient, a subject and a text body; `changes` replace fields."""
    fields: dict[str, Any] = {
        "sender": Address("a@example.com"),
        "to": (Address("b@example.com"),),
        "subject": "Hi",
        "text": "x",
    }
    fields.update(changes)
    return Message(**fields)


def json_of(request: HttpRequest) -> dict[str, Any]:
    """A JSON request body, decoded."""
    decoded: dict[str, Any] = orjson.loads(request.body)
    return decoded


# -- contracts ---------------------------------------------------------------------------


def load_contract(name: str) -> dict[str, Any]:
    """One contract copy from tests/contracts, by file name (`"sendgrid.send.json"`)."""
    contract: dict[str, Any] = orjson.loads((CONTRACTS / name).read_bytes())
    return contract


def endpoint(contract: Mapping[str, Any], method: str, path: str) -> dict[str, Any]:
    """The contract's one entry for `method path`."""
    (found,) = [e for e in contract["endpoints"] if (e["method"], e["path"]) == (method, path)]
    return found  # type: ignore[no-any-return]


def json_schema(part: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body schema of an endpoint's `request`, or of one of its `responses`."""
    return part["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def validate(schema: Mapping[str, Any], instance: Any) -> list[str]:
    """Every way `instance` breaks `schema`, `format` keywords included, as messages: []
    when it fits. The draft is the one the schema names in `$schema`: the ESPs publish
    different ones."""
    draft = validator_for(schema)
    validator = draft(schema, format_checker=draft.FORMAT_CHECKER)
    return [error.message for error in validator.iter_errors(instance)]


# -- SES ------------------------------------------------------------------------------------


def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Leave nothing of this machine's AWS setup in reach: no keys, no profiles, no
    instance role. Returns the shared config file's path (absent until a test writes it)."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path / "config"
