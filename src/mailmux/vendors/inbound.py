"""The inbound half of a vendor package: an ESP's own send request in, that ESP's reply out.

A service that already uses an ESP's SDK points it at mailmux and changes
nothing else. For that, each vendor package (`vendors/<esp>/inbound.py`)
implements `Shape`: where the ESP's clients put their key, how the ESP's
send request becomes Messages, and how mailmux's results are worded as that
ESP's replies and errors, so the SDK returns what its docs promise and
raises the exceptions its callers already handle. The emulator serves the
same `Shape`, so the ESP's parsing is written once.

Everything here is pure: a `ShapeRequest` is the request already read, a
`Reply` is what to answer. The ingress (`mailmux.ingress.shaped`) does the
I/O, checks keys, runs the Deliverer, and passes an ESP's own answer through
when a vendor of the same ESP sent the message (`AttemptResult.passed_through`).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import orjson

from mailmux.message import FieldError, Message, MessageLimits

if TYPE_CHECKING:  # only the type: the mapping itself never touches aiohttp
    from aiohttp import web


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route of an ESP's send API, e.g. Endpoint("batch", "POST", "/email/batch")."""

    name: str
    method: str
    path: str  # aiohttp route syntax: "/v3/{domain}/messages"


@dataclass(frozen=True, slots=True)
class ShapeRequest:
    """A request to one of a shape's endpoints, read whole; `headers` is case-insensitive."""

    endpoint: str  # Endpoint.name
    method: str
    path: str  # as received, percent-decoded
    query: str  # as received, still encoded
    params: Mapping[str, str]  # the route's parameters, e.g. {"domain": "mg.example.com"}
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def of(cls, endpoint: str, request: web.Request, body: bytes) -> ShapeRequest:
        """The aiohttp request to `endpoint` (its route's name) with its body read."""
        return cls(
            endpoint=endpoint,
            method=request.method,
            path=request.path,
            query=request.query_string,
            params=request.match_info,
            headers=request.headers,
            body=body,
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer in the ESP's words: status, headers (with Content-Type) and body."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(status: int, document: object, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON reply, as most ESPs answer."""
    return Reply(
        status, orjson.dumps(document), {"Content-Type": "application/json", **(headers or {})}
    )


class Failure(Enum):
    """Why a request gets no success, in mailmux's words; each shape words it as its ESP does."""

    INVALID_JSON = "invalid_json"  # the body cannot be decoded (JSON, form or multipart)
    INVALID_REQUEST = "invalid_request"  # missing or bad fields: `errors` says which
    TOO_LARGE = "too_large"  # the body exceeds limits.max_request_bytes
    UNAUTHORIZED = "unauthorized"  # no key in the ESP's auth slot
    FORBIDDEN = "forbidden"  # a key (or SigV4 signature) mailmux does not accept
    REJECTED = "rejected"  # every vendor refused the message itself, permanently
    EXPIRED = "expired"  # the message's deadline passed before a vendor took it
    UNAVAILABLE = "unavailable"  # neither sent nor spooled: nothing was accepted, retry later
    IDEMPOTENCY_REUSED = "idempotency_reused"  # the key was first used for another body
    IDEMPOTENCY_IN_FLIGHT = "idempotency_in_flight"  # the key's first request is still running


class ShapeError(Exception):
    """A request the shape refuses before anything is sent: `failure`, with every problem."""

    def __init__(self, failure: Failure, message: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.errors = tuple(errors)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one message of a request, as a shape needs it for its reply.

    `accepted` means sent or durably spooled (`queued`): every ESP answers
    "queued" itself, so both are its success. Otherwise `reason` says why it
    failed (`expired` when its deadline passed first). `recipients` counts the
    message's to, cc and bcc, for ESPs whose answer counts recipients (SparkPost).
    """

    id: str  # mailmux's message id: the id the ESP's reply carries
    accepted: bool
    queued: bool = False
    expired: bool = False
    reason: str = ""
    recipients: int = 1


class Credential:
    """The key a request carries in its ESP's auth slot, and the client name if the slot has one.

    `name` is what the slot says besides the key (Mailjet's API key, SES's
    access key id); None where the slot holds a key alone. `matches` compares
    in constant time; SigV4 overrides it to verify the signature instead.
    """

    __slots__ = ("_secret", "name")

    def __init__(self, secret: str, name: str | None = None) -> None:
        self._secret = secret.encode()
        self.name = name

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self._secret, key.encode())


class Shape(Protocol):
    """One ESP's send API as mailmux serves it (ingress) and emulates it (emulator)."""

    @property
    def kind(self) -> str:
        """The vendor kind of this ESP (`sendgrid`, ...): pass-through goes to vendors of it."""
        ...

    @property
    def endpoints(self) -> Sequence[Endpoint]:
        """The ESP's send routes, served at the host root as the ESP serves them."""
        ...

    def credential(self, request: ShapeRequest) -> Credential | None:
        """The key in the ESP's auth slot; None when there is none (→ UNAUTHORIZED)."""
        ...

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        """The request's messages, each with `original` set; ShapeError when refused.

        Checks what the ESP itself refuses and the rules every ingress shares
        (`mailmux.message.Checker`: header injection, sizes, addresses). A
        request that is several messages gives one Message per email the ESP
        would send, in order; each one's `original.body` is the request
        narrowed to it, so a vendor of this ESP can send it alone.
        """
        ...

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        """The ESP's answer for these results, one per parsed message, in order."""
        ...

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        """The ESP's answer at `endpoint` for a refused request: what its SDK raises on."""
        ...


@runtime_checkable
class ChoosesIdempotencyKey(Protocol):
    """A shape whose SDK sends an `Idempotency-Key` the caller did not choose.

    The ingress honours the header for `idempotency.retention_seconds`; an
    SDK that fills it with a fingerprint of the content (mailjet-rest does)
    would have a legitimately repeated send dropped. Such a shape says which
    key the caller meant: the header's value, or None for the SDK's own.
    """

    def idempotency_key(self, request: ShapeRequest) -> str | None: ...
