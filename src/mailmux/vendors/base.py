"""The vendor interface, the outcome taxonomy, and the one HTTP boundary.

A vendor module holds one ESP's wire contract as pure functions (Message →
HttpRequest, HttpResponse → AttemptResult). Everything that touches the
network lives here, once: the pooled aiohttp session, timeouts, and the map
from foreign exceptions to outcomes (connect failure → nothing was sent;
timeout or reset after sending → the ESP may have taken it). A large body
(`vendors.body.StreamedBody`) goes out part by part through `StreamedPayload`,
never joined into one bytes object.
"""

from __future__ import annotations

import email.utils
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

import aiohttp
from aiohttp.abc import AbstractStreamWriter

from mailmux import __version__
from mailmux.message import Message, Original
from mailmux.pool_share import PoolShare
from mailmux.vendors.body import Body, StreamedBody

#: Sent to every ESP: some (Resend) refuse requests without one.
USER_AGENT = f"mailmux/{__version__}"


class Outcome(Enum):
    """How one attempt ended; each member says what the Deliverer does next."""

    ACCEPTED = "accepted"  # the vendor took the message: done, state `sent`.
    RETRIABLE = "retriable"  # provider trouble (5xx, connect failure): next vendor; health hit.
    RATE_LIMITED = "rate_limited"  # vendor throttled or out of quota: next vendor; retry no
    # sooner than `retry_after`; health hit.
    PERMANENT = "permanent"  # the message or its recipients are bad: stop, `failed`, tell the
    # caller; never counts against health.
    AMBIGUOUS = "ambiguous"  # request sent, answer lost: the class's ambiguous policy decides;
    # health hit.
    VENDOR_CONFIG = "vendor_config"  # this vendor cannot send this (auth, unverified sender):
    # eject the vendor, next vendor; never blames the message.
    UNSUPPORTED = "unsupported"  # this ESP cannot carry a feature of this message; nothing was
    # sent: next vendor, no health effect; `failed` only if no vendor can carry it.


#: Outcomes that say something about the vendor rather than the message.
COUNTS_AGAINST_HEALTH = frozenset(
    {Outcome.RETRIABLE, Outcome.RATE_LIMITED, Outcome.AMBIGUOUS, Outcome.VENDOR_CONFIG}
)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt's outcome with the evidence an operator needs to act on it."""

    outcome: Outcome
    vendor_message_id: str | None = None
    status: int | None = None  # HTTP status or SMTP reply code, when there was one
    reason: str = ""  # short human text: the ESP's own error message where it gave one
    retry_after: float | None = None  # seconds, when the ESP said how long to wait
    #: The ESP's own answer when the message's original request was passed through
    #: unchanged (a vendor of the ESP whose API the caller used): the caller gets it as is.
    passed_through: HttpResponse | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A fully built request; `url` is absolute. `body` is bytes, or parts when large."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: Body


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response as the pure mappings see it; look headers up by lower-case name.

    The transport hands over aiohttp's case-insensitive headers as they are
    (no per-response copy); tests pass plain dicts with lower-case keys.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class Transport(Protocol):
    """The one-method seam between vendor mappings and the network."""

    async def __call__(self, request: HttpRequest, timeout: float) -> HttpResponse: ...

    async def close(self) -> None: ...


class TransportError(Exception):
    """A request that got no HTTP answer, already classified.

    `sent` is False only when the request certainly never reached the ESP
    (connection refused, DNS, connect timeout); then resending is safe.
    """

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Connection reuse and timeouts for one vendor's session."""

    pool_size: int = 100
    connect_timeout: float = 5.0


class AiohttpTransport:
    """One pooled aiohttp session per vendor, created lazily inside the loop."""

    def __init__(self, settings: PoolSettings | None = None) -> None:
        self._settings = settings or PoolSettings()
        self._session: aiohttp.ClientSession | None = None
        self._last_timeout: aiohttp.ClientTimeout | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._settings.pool_size, limit_per_host=0, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def __call__(self, request: HttpRequest, timeout: float) -> HttpResponse:
        session = self._get_session()
        client_timeout = self._timeout(timeout)
        try:
            async with session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=_payload(request.body),
                timeout=client_timeout,
            ) as response:
                body = await response.read()
                return HttpResponse(response.status, response.headers, body)
        except aiohttp.ClientConnectorError as err:
            raise TransportError(f"connect failed: {err.strerror or err}", sent=False) from err
        except aiohttp.ConnectionTimeoutError as err:
            raise TransportError("connect timed out", sent=False) from err
        except TimeoutError as err:
            raise TransportError(f"no answer within {timeout:.3g}s", sent=True) from err
        except aiohttp.ServerDisconnectedError as err:
            raise TransportError("connection closed before an answer", sent=True) from err
        except aiohttp.ClientError as err:
            raise TransportError(f"{type(err).__name__}: {err}", sent=True) from err
        except OSError as err:
            raise TransportError(f"{type(err).__name__}: {err}", sent=True) from err

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """Almost every attempt has the configured timeout: build that one once."""
        cached = self._last_timeout
        if cached is not None and cached.total == seconds:
            return cached
        self._last_timeout = aiohttp.ClientTimeout(
            total=seconds, sock_connect=min(self._settings.connect_timeout, seconds)
        )
        return self._last_timeout

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class StreamedPayload(aiohttp.Payload):
    """A `StreamedBody` as aiohttp sends it: sized up front, written chunk by chunk.

    aiohttp takes `size` as the Content-Length, so nothing is sent chunked.
    The body is immutable and each write walks it from its start, so the
    payload is never consumed: aiohttp may write it again on a new connection.
    """

    _value: StreamedBody
    _autoclose = True  # holds no file or socket

    def __init__(self, body: StreamedBody) -> None:
        super().__init__(body)
        self._size = body.size

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        remaining = self._value.size if content_length is None else content_length
        for chunk in self._value.chunks():
            if remaining <= 0:
                return
            if len(chunk) > remaining:
                chunk = memoryview(chunk)[:remaining]
            remaining -= len(chunk)
            await writer.write(chunk)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The whole body as text; joins every part, so only for small bodies and debugging."""
        return b"".join(self._value.chunks()).decode(encoding, errors)


def _payload(body: Body) -> bytes | StreamedPayload:
    return body if isinstance(body, bytes) else StreamedPayload(body)


class Vendor(ABC):
    """An ESP account configured in mailmux."""

    kind: str = ""

    def __init__(self, name: str) -> None:
        self.name = name
        #: The part of its connection pool that attempts which can wait may hold
        #: (None: it keeps no pool, so nothing needs keeping back for urgent mail).
        self.share: PoolShare | None = None

    @abstractmethod
    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        """Try to hand `message` to the ESP; never raises for delivery trouble.

        `message_id` is mailmux's own id of the message (not the caller's
        Idempotency-Key): the same on every attempt and retry of one message and
        unique per message, so that an ESP which drops duplicates by a key can be
        given one derived from it, and a retry after an ambiguous attempt is not
        sent twice.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook: most vendors hold nothing
        """Release connections."""


class UnsupportedFeature(Exception):
    """Raised by a mapping when the ESP cannot carry part of a message."""


class HttpVendor(Vendor):
    """The fixed pipeline for HTTP ESPs; subclasses supply the pure mappings.

    A message that arrived through this ESP's own API (`message.original`
    names this vendor's kind) is passed through: `passthrough_request` sends
    the caller's request body unchanged with this vendor's credentials, and
    the ESP's answer is kept in the result for the caller. Any other message
    is translated by `build_request`.
    """

    def __init__(self, name: str, transport: Transport) -> None:
        super().__init__(name)
        self.transport = transport

    @abstractmethod
    def build_request(self, message: Message, message_id: str) -> HttpRequest:
        """Message → the ESP's request. Raises UnsupportedFeature for what it cannot carry.

        `message_id` is what `send` was given: the source of an ESP's idempotency key.
        """

    @abstractmethod
    def passthrough_request(self, original: Original, message_id: str) -> HttpRequest:
        """The caller's own request to this ESP, re-addressed to this vendor's account.

        `original.body` goes out unchanged; only the credentials (and where the
        ESP puts one in the path, the sending domain) are this vendor's.
        """

    @abstractmethod
    def parse_response(self, response: HttpResponse) -> AttemptResult:
        """The ESP's answer → outcome, with the ESP's own error classification."""

    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        original = message.original
        passing = original is not None and original.shape == self.kind
        try:
            if passing and original is not None:
                request = self.passthrough_request(original, message_id)
            else:
                request = _exact_size(self.build_request(message, message_id))
        except UnsupportedFeature as err:
            return AttemptResult(Outcome.UNSUPPORTED, reason=str(err))
        try:
            response = await self.transport(request, timeout)
        except TransportError as err:
            outcome = Outcome.AMBIGUOUS if err.sent else Outcome.RETRIABLE
            return AttemptResult(outcome, reason=err.reason)
        result = self.parse_response(response)
        if not passing:
            return result
        return AttemptResult(  # not replace(): this is the hot path, and it costs 3x more
            result.outcome,
            result.vendor_message_id,
            result.status,
            result.reason,
            result.retry_after,
            response,
        )

    async def close(self) -> None:
        await self.transport.close()


def _exact_size(request: HttpRequest) -> HttpRequest:
    """The request with a bytes body copied to an allocation of its own size.

    orjson (3.12+) returns its output inside a buffer up to ~8x larger and
    never shrinks it; a body that lives as long as an attempt would then hold
    that slack for every request in flight (measured: ~40 MB at 1,000 in
    flight with 8 KB messages). The copy costs about a microsecond. A
    streamed body is left alone: its parts are exact already (split out of
    orjson's output, or joined multipart text) or are the message's own
    bytes, which must not be copied.
    """
    if isinstance(request.body, StreamedBody):
        return request
    return replace(request, body=bytes(memoryview(request.body)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def retry_after_from(
    headers: Mapping[str, str],
    now: float,
    *,
    reset_header: str | None = None,
    reset_is_epoch: bool = False,
) -> float | None:
    """Seconds to wait: `Retry-After`, else the ESP's own rate-limit reset header.

    Several ESPs say when a throttle lifts only in a header of their own, some
    as an epoch second (SendGrid's `X-RateLimit-Reset`) and some as seconds
    until the reset (Brevo, Resend); reading it here keeps the parsing, and
    its refusal of garbage and non-finite values, the same for all of them.
    `reset_header` is a lower-case name; `now` is the wall clock in epoch seconds.
    """
    seconds = parse_retry_after(headers.get("retry-after"), now)
    if seconds is not None or reset_header is None:
        return seconds
    try:
        reset = float(headers.get(reset_header, ""))
    except ValueError:
        return None
    if not math.isfinite(reset):
        return None
    return max(0.0, reset - now if reset_is_epoch else reset)


def fallback_outcome(
    status: int, detail: str, config_reasons: Mapping[int, str], retry_after: float | None
) -> AttemptResult:
    """The outcome of an answer a vendor mapping has no specific rule for.

    A status in `config_reasons`, or a redirect (never followed, so `base_url`
    is wrong), means this vendor cannot send anything: VENDOR_CONFIG. Anything
    else is RETRIABLE: an ESP's 5xx is its own trouble, and an undocumented
    status says nothing certain about the message, so it must not fail it for
    good; another vendor tries and health counts it. `retry_after` is kept
    only where a retry is what comes next.
    """
    config = config_reasons.get(status)
    if config is None and 300 <= status < 400:
        config = "redirected; check base_url"
    if config is not None:
        return AttemptResult(Outcome.VENDOR_CONFIG, status=status, reason=f"{config}: {detail}")
    if status < 500:
        detail = f"unexpected status: {detail}"
    return AttemptResult(Outcome.RETRIABLE, status=status, reason=detail, retry_after=retry_after)


def excerpt(body: bytes, limit: int = 200) -> str:
    """A short printable piece of a response body for reasons and logs."""
    text = body[:limit].decode("utf-8", "replace").strip()
    return text + ("…" if len(body) > limit else "")
