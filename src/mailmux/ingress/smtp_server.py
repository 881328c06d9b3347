"""The SMTP listeners: aiosmtpd sessions on `smtp.listen` (STARTTLS when a certificate is
configured) and `smtp.listen_tls` (implicit TLS), their start and their orderly stop.

Every session shares one `SubmissionHandler` and one AUTH failure limiter, so a peer's
failures count on both listeners. Stopping closes the listening sockets, lets each
DATA already being delivered give its reply, then closes every session: a client that
was still sending its message loses it, and retries, as SMTP clients do.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP

from mailmux.config_smtp import SmtpConfig
from mailmux.config_values import split_listen
from mailmux.ingress import smtp_replies as reply
from mailmux.ingress.clients import ClientKeys
from mailmux.ingress.smtp import SubmissionHandler, SubmissionRules, Submit
from mailmux.ingress.smtp_auth import Authenticator, FailureLimiter, TrustedPeers
from mailmux.message import MessageLimits
from mailmux.metrics import NO_METRICS, Recorder

log = logging.getLogger("mailmux.smtp")


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    """aiosmtpd 1.4 warns "Session.login_data is deprecated" on every successful AUTH,
    from its own code: a warning per message that says nothing to an operator."""
    return "login_data is deprecated" not in record.getMessage()


#: aiosmtpd's own log. At INFO it writes every command of every session, senders and
#: recipients included (measured: six lines per message, a tenth of the CPU an SMTP
#: message costs); mailmux logs its own decisions instead, so only its warnings pass.
_AIOSMTPD_LOG = logging.getLogger("mail.log")
_AIOSMTPD_LOG.setLevel(logging.WARNING)
_AIOSMTPD_LOG.addFilter(_not_login_data_notice)

IDENT = "ESMTP mailmux"


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """What the listeners need besides `smtp:` itself."""

    limits: MessageLimits
    keys: ClientKeys
    #: aiosmtpd's one timeout: a session idle this long between commands, or a DATA
    #: (content and delivery) taking longer, is closed.
    timeout: float
    #: How long a stop waits for deliveries under way.
    grace: float
    #: Open SMTP sessions at most (`limits.max_connections`); one more is told 421 and closed.
    max_connections: int = 4096
    #: Where each submission's reply code is counted.
    metrics: Recorder = NO_METRICS


class Session(SMTP):
    """One SMTP connection; the server keeps the live ones to close them when it stops.

    Beyond `max_connections` open sessions a new connection is answered 421 and
    closed at once, so a flood of idle connections cannot take every file the
    process may open (SMTP clients retry a 421 later).
    """

    def __init__(
        self,
        live: set[Session],
        handler: SubmissionHandler,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._live = live
        self._max_connections = max_connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self not in self._live  # it is made again after STARTTLS, over TLS
        if first and len(self._live) >= self._max_connections:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(f"{reply.TOO_MANY_CONNECTIONS}\r\n".encode())
            transport.close()
            return
        super().connection_made(transport)
        self._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        if self not in self._live:  # refused in connection_made: aiosmtpd never started
            return
        self._live.discard(self)
        super().connection_lost(error)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def tls_context(config: SmtpConfig) -> ssl.SSLContext | None:
    """The server's TLS context from the configured certificate, or None without one."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


class SmtpServer:
    """The SMTP listeners of one mailmux node; `port` and `tls_port` once started."""

    def __init__(
        self,
        config: SmtpConfig,
        settings: SmtpSettings,
        submit: Submit,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._settings = settings
        self._limiter = FailureLimiter(config.auth_failures)
        self._authenticator = Authenticator(settings.keys, self._limiter)
        self.handler = SubmissionHandler(
            submit,
            SubmissionRules(
                limits=settings.limits,
                trusted=TrustedPeers(config.allow_unauthenticated),
                require_tls=config.tls_required,
            ),
            self._limiter,
            clock,
            settings.metrics,
        )
        self._servers: list[asyncio.AbstractServer] = []
        self._live: set[Session] = set()
        self.port: int | None = None
        self.tls_port: int | None = None

    async def start(self) -> None:
        """Bind every configured listener (ValueError for a certificate that cannot load)."""
        try:
            context = tls_context(self._config)
        except (OSError, ssl.SSLError) as err:
            raise ValueError(f"smtp.tls_cert_file / tls_key_file: cannot load: {err}") from err
        hostname = self._config.hostname
        if hostname is None:
            hostname = await asyncio.to_thread(socket.getfqdn)
        loop = asyncio.get_running_loop()
        if self._config.listen is not None:
            host, port = split_listen(self._config.listen)
            server = await loop.create_server(
                lambda: self._session(hostname, starttls=context), host, port
            )
            self._servers.append(server)
            self.port = server.sockets[0].getsockname()[1]
        if self._config.listen_tls is not None and context is not None:
            host, port = split_listen(self._config.listen_tls)
            server = await loop.create_server(
                lambda: self._session(hostname, starttls=None), host, port, ssl=context
            )
            self._servers.append(server)
            self.tls_port = server.sockets[0].getsockname()[1]

    def _session(self, hostname: str, *, starttls: ssl.SSLContext | None) -> Session:
        """A session; `starttls` is the context STARTTLS uses (None on the implicit-TLS
        listener, whose socket is already TLS, and on `listen` without a certificate)."""
        return Session(
            self._live,
            self.handler,
            self._settings.max_connections,
            data_size_limit=self._settings.limits.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident=IDENT,
            tls_context=starttls,
            timeout=self._settings.timeout,
            # Before STARTTLS, AUTH is neither offered nor taken when TLS is required.
            auth_require_tls=starttls is not None and self._config.tls_required,
            authenticator=self._authenticator,
            loop=asyncio.get_running_loop(),
        )

    async def stop(self) -> None:
        """Stop listening, let deliveries under way reply, then close every session."""
        self.handler.closing = True
        for server in self._servers:
            server.close()
        try:
            await asyncio.wait_for(self.handler.finish(), self._settings.grace)
        except TimeoutError:
            log.warning("SMTP: deliveries still running after %.0f s", self._settings.grace)
        for session in list(self._live):
            session.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
