"""Which client a request comes from, by the key in its API's auth slot.

Keys come from the config: `api_keys` (anonymous) and `clients.<name>.key`
(named, so later metrics and routing rules can tell clients apart). Every
ingress asks the same `ClientKeys`; only where the key sits differs, and
that is the shape's business (`vendors.inbound.Credential`). With no key
configured at all, every request passes (mailmux then listens on loopback
only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mailmux.vendors.inbound import Credential


@dataclass(frozen=True, slots=True)
class Caller:
    """A request whose key was accepted; `client` is None for an anonymous `api_keys` key."""

    client: str | None


ANONYMOUS = Caller(None)


class ClientKeys:
    def __init__(self, api_keys: Iterable[str], clients: Mapping[str, str]) -> None:
        self.update(api_keys, clients)

    def update(self, api_keys: Iterable[str], clients: Mapping[str, str]) -> None:
        """New keys (a config reload); every ingress asks this object, so all see them at once."""
        self._anonymous = tuple(api_keys)
        self._named = dict(clients)

    @property
    def required(self) -> bool:
        """Whether a request must show a key."""
        return bool(self._anonymous or self._named)

    def identify(self, credential: Credential | None) -> Caller | None:
        """The caller `credential` proves, or None when it proves none.

        A credential that names a client (Mailjet's API key, SES's access key
        id) is checked against that client's key first; any key is then
        looked for among all keys, so a client may also use a slot that
        carries no name. Every comparison is constant-time.
        """
        if not self.required:
            return ANONYMOUS
        if credential is None:
            return None
        named = None if credential.name is None else self._named.get(credential.name)
        if named is not None and credential.matches(named):
            return Caller(credential.name)
        for name, key in self._named.items():
            if credential.matches(key):
                return Caller(name)
        if any(credential.matches(key) for key in self._anonymous):
            return ANONYMOUS
        return None
