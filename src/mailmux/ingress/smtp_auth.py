"""Who may submit over SMTP: AUTH against the client keys, the peers trusted without it,
and the per-peer limit on failed AUTH.

AUTH PLAIN and LOGIN carry a user name and a password; the password is a client key
(`ClientKeys`, the same keys as the HTTP ingress). A `clients:` key is checked with the
user name as the client's name first, and any user name goes with an `api_keys` key, so
a service whose SMTP library insists on a user name can send one.

A failed AUTH counts against the peer's address for a minute; a peer with
`auth_failures` failures in the last minute is refused before its credentials are
looked at, so guessing keys costs a minute per handful of guesses. Nothing here logs a
credential: aiosmtpd masks the AUTH line in its own logs, and a failure is logged with
the peer and the user name only.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailmux.ingress.clients import Caller, ClientKeys
from mailmux.vendors.inbound import Credential

log = logging.getLogger("mailmux.smtp")

WINDOW_SECONDS = 60.0
#: Peers remembered at most: a scan from many addresses cannot grow memory without bound.
MAX_PEERS = 10_000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_address(session: Session) -> str:
    """The peer's IP address as text ("" when the socket does not say)."""
    peer = session.peer
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return ""


class TrustedPeers:
    """The addresses and networks that may send without AUTH (`smtp.allow_unauthenticated`)."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self._networks = tuple(networks)

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])  # without an IPv6 zone
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)


class FailureLimiter:
    """Failed AUTH attempts per peer address over the last minute."""

    def __init__(self, allowed: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._allowed = allowed
        self._clock = clock
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def _recent(self, peer: str) -> collections.deque[float] | None:
        times = self._failures.get(peer)
        if times is None:
            return None
        cutoff = self._clock() - WINDOW_SECONDS
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[peer]
            return None
        return times

    def blocked(self, peer: str) -> bool:
        """Whether `peer` used up its failures for now."""
        times = self._recent(peer)
        return times is not None and len(times) >= self._allowed

    def failed(self, peer: str) -> None:
        times = self._recent(peer)
        if times is None:
            times = self._failures[peer] = collections.deque(maxlen=self._allowed)
            if len(self._failures) > MAX_PEERS:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(peer)
        times.append(self._clock())


class Authenticator:
    """aiosmtpd's `authenticator`: a login and password → the Caller, kept as `auth_data`."""

    def __init__(self, keys: ClientKeys, limiter: FailureLimiter) -> None:
        self._keys = keys
        self._limiter = limiter

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        peer = peer_address(session)
        user = data.login.decode("utf-8", "replace")
        try:
            secret = data.password.decode("utf-8")
        except UnicodeDecodeError:
            secret = None
        caller: Caller | None = None
        if secret:
            caller = self._keys.identify(Credential(secret, user or None))
        if caller is None:
            self._limiter.failed(peer)
            log.warning("SMTP AUTH %s failed for user %r from %s", mechanism, user[:64], peer)
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=caller)
