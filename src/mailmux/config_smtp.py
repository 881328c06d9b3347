"""The `smtp:` section: mailmux's SMTP submission server (`mailmux.ingress.smtp`).

Its own module because the SMTP server has rules of its own that the rest of
the configuration need not know: where it listens, its certificate, when TLS
is required and which peers may send without AUTH. Message sizes, recipient
counts and timeouts come from `limits:`, shared with the HTTP ingress.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, IPvAnyNetwork, model_validator

from mailmux.config_sources import Violations
from mailmux.config_values import Count, checked_listen, is_loopback, null_words, split_listen

_Listen = Annotated[str | None, BeforeValidator(checked_listen), BeforeValidator(null_words)]
_Optional = Annotated[str | None, Field(min_length=1), BeforeValidator(null_words)]


def _network_list(value: object) -> object:
    """An override arrives as one string: MAILMUX_SMTP__ALLOW_UNAUTHENTICATED=10.0.0.0/8,::1.
    An empty one (or `none`) lets no peer send without AUTH."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class SmtpConfig(BaseModel):
    """Where the SMTP server listens and whom it trusts; off while both listens are null."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: _Listen = None  # STARTTLS when the certificate is set
    listen_tls: _Listen = None  # implicit TLS (port 465 style)
    hostname: _Optional = None  # banner and EHLO; default: the machine's FQDN
    tls_cert_file: _Optional = None
    tls_key_file: _Optional = Field(default=None, repr=False)
    require_tls: Annotated[bool | None, BeforeValidator(null_words)] = None
    allow_unauthenticated: Annotated[tuple[IPvAnyNetwork, ...], BeforeValidator(_network_list)] = (
        Field(
            default_factory=lambda: (
                ipaddress.IPv4Network("127.0.0.0/8"),
                ipaddress.IPv6Network("::1"),
            )
        )
    )
    auth_failures: Count = 5  # failed AUTH per peer per minute before 454 4.7.0

    @property
    def enabled(self) -> bool:
        return self.listen is not None or self.listen_tls is not None

    @property
    def has_certificate(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def tls_required(self) -> bool:
        """`require_tls` resolved: unset means required unless every listen is loopback."""
        if self.require_tls is not None:
            return self.require_tls
        return any(not is_loopback(split_listen(a)[0]) for _, a in self.addresses())

    def addresses(self) -> Iterator[tuple[str, str]]:
        """(setting, host:port) for each configured listener."""
        for name in ("listen", "listen_tls"):
            value = getattr(self, name)
            if value is not None:
                yield name, value

    @model_validator(mode="after")
    def _tls_is_possible(self) -> SmtpConfig:
        problems: list[tuple[str, str]] = []
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            problems.append((missing, "tls_cert_file and tls_key_file go together"))
        elif self.listen_tls is not None and not self.has_certificate:
            problems.append(("listen_tls", "implicit TLS needs tls_cert_file and tls_key_file"))
        elif self.listen is not None and self.tls_required and not self.has_certificate:
            problems.append(
                (
                    "require_tls",
                    "TLS is required (the default off loopback) but STARTTLS needs "
                    "tls_cert_file and tls_key_file; set them, or require_tls: false",
                )
            )
        if problems:
            raise Violations(*problems)
        return self
