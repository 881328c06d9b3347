"""The SMTP submission handler: aiosmtpd's hooks, turning a transaction into a Message.

A service that speaks SMTP points its relay host at mailmux and gets what an HTTP
caller gets: the same Deliverer, so the same routing, failover, spool and deadlines.
aiosmtpd runs the protocol (`mailmux.ingress.smtp_server` starts it); this handler
decides, one hook per command:

- MAIL: TLS first when `smtp.require_tls`, then AUTH unless the peer is trusted
  (`smtp.allow_unauthenticated`), then the sender's syntax;
- RCPT: each recipient on its own (syntax, the recipient limit), so one bad
  address does not sink the others;
- DATA: the content as `parse_mime` reads it (the raw MIME kept for vendors that
  take it, X-Mailmux-* headers consumed), then the Deliverer. The 250 reply is the
  promise: it is sent only once a vendor accepted the message or the spool holds
  it. A client gone before the final dot never reaches this hook, so nothing of
  its message is sent or kept.

Replies are the named constants of `mailmux.ingress.smtp_replies`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, TLSSetupException

from mailmux.addresses import AddressError, normalize
from mailmux.ingress import smtp_replies as reply
from mailmux.ingress.clients import Caller
from mailmux.ingress.smtp_auth import FailureLimiter, TrustedPeers, peer_address
from mailmux.message import InvalidMessage, Message, MessageLimits
from mailmux.metrics import NO_METRICS, SMTP_SHAPE, Recorder
from mailmux.mime import parse_mime
from mailmux.receipts import Receipt
from mailmux.spool.base import MessageState

log = logging.getLogger("mailmux.smtp")

#: `Deliverer.submit`: sent or spooled, or it raises.
Submit = Callable[[Message], Coroutine[Any, Any, Receipt]]


@dataclass(frozen=True, slots=True)
class SubmissionRules:
    """What the handler enforces, from `smtp:` and `limits:`."""

    limits: MessageLimits
    trusted: TrustedPeers
    require_tls: bool


class InFlight:
    """Counts DATA hooks under way, so a shutdown can let them give their reply first."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def wait(self) -> None:
        await self._idle.wait()


def _encrypted(server: SMTP) -> bool:
    """Whether the session runs over TLS (after STARTTLS, or implicit TLS)."""
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class SubmissionHandler:
    """aiosmtpd's hooks for mail submission (each `handle_*` attribute is a hook)."""

    def __init__(
        self,
        submit: Submit,
        rules: SubmissionRules,
        limiter: FailureLimiter,
        clock: Callable[[], float],
        metrics: Recorder = NO_METRICS,
    ) -> None:
        self._submit = submit
        self._metrics = metrics
        self._rules = rules
        self._limiter = limiter
        self._clock = clock
        self.in_flight = InFlight()
        #: Set when the server stops: new transactions are turned away.
        self.closing = False
        #: Deliveries still running after their client went away (kept so they finish).
        self._orphans: set[asyncio.Task[Receipt]] = set()

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> object:
        """Before any credential is read: a peer over its failure budget is turned away and
        disconnected; otherwise aiosmtpd runs the mechanism with the Authenticator."""
        if not self._limiter.blocked(peer_address(session)):
            return MISSING
        transport = server.transport
        if transport is not None:  # closes after the reply is written
            asyncio.get_running_loop().call_soon(transport.close)
        return reply.AUTH_THROTTLED

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.closing:
            return reply.SHUTTING_DOWN
        if self._rules.require_tls and not _encrypted(server):
            return reply.TLS_REQUIRED
        if not session.authenticated and peer_address(session) not in self._rules.trusted:
            return reply.AUTH_REQUIRED
        try:
            normalize(address)
        except AddressError as err:
            return reply.BAD_SENDER.format(reply.one_line(err.reason))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return reply.SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self._rules.limits.max_recipients:
            return reply.TOO_MANY_RECIPIENTS
        try:
            normalize(address)
        except AddressError as err:
            return reply.BAD_RECIPIENT.format(reply.one_line(err.reason))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return reply.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """One submission, counted by its reply code like an HTTP request by its status."""
        answer = await self._data(session, envelope)
        self._metrics.request(SMTP_SHAPE, int(answer[:3]))
        return answer

    async def _data(self, session: Session, envelope: Envelope) -> str:
        with self.in_flight.one():
            content = envelope.original_content or b""
            refused = _refused_bytes(content)
            if refused is not None:
                return refused
            try:
                message = parse_mime(
                    content,
                    envelope_from=envelope.mail_from,
                    envelope_to=envelope.rcpt_tos,
                    limits=self._rules.limits,
                    now=self._clock(),
                )
            except InvalidMessage as err:
                return _invalid(err)
            caller = session.auth_data if session.authenticated else None
            if isinstance(caller, Caller) and caller.client is not None:
                message = replace(message, client=caller.client)
            try:
                receipt = await self._deliver(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Neither sent nor spooled: say so, never "accepted".
                log.exception("could not deliver or spool a message submitted over SMTP")
                return reply.UNAVAILABLE
            return _receipt_reply(receipt)

    async def _deliver(self, message: Message) -> Receipt:
        """The Deliverer's answer. Once the final dot arrived the delivery runs to its end
        even if the client goes away meanwhile: stopping half-way could leave a message an
        ESP took unrecorded."""
        task = asyncio.create_task(self._submit(message))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                self._orphans.add(task)
                task.add_done_callback(self._orphan_done)
            raise

    def _orphan_done(self, task: asyncio.Task[Receipt]) -> None:
        self._orphans.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a message whose client left could not be delivered or spooled")

    async def finish(self) -> None:
        """Wait for the DATA hooks under way and the deliveries of clients that left."""
        await self.in_flight.wait()
        if self._orphans:
            await asyncio.wait(set(self._orphans))

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            log.info("SMTP TLS handshake failed: %r", error.__cause__)
        else:
            log.error("SMTP session error", exc_info=error)
        return reply.LOCAL_ERROR


def _refused_bytes(content: bytes) -> str | None:
    """The reply for content no relay should be handed (NUL, bare CR or LF), else None."""
    if b"\x00" in content:
        return reply.NUL_BYTE
    line_ends = content.count(b"\r\n")
    if content.count(b"\n") != line_ends or content.count(b"\r") != line_ends:
        return reply.BARE_LINE_END
    return None


def _invalid(err: InvalidMessage) -> str:
    detail = reply.one_line("; ".join(map(str, err.errors)))
    if any(e.code == "too_large" and e.path == "" for e in err.errors):
        return reply.TOO_LARGE.format(detail)
    return reply.INVALID_MESSAGE.format(detail)


def _receipt_reply(receipt: Receipt) -> str:
    if receipt.state is MessageState.FAILED:
        why = receipt.reason or "a vendor rejected it permanently"
        return reply.FAILED.format(receipt.id, reply.one_line(why))
    if receipt.state is MessageState.EXPIRED:
        return reply.EXPIRED.format(receipt.id)
    return reply.QUEUED.format(receipt.id)
