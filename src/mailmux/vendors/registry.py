"""From a vendor's configuration to a Vendor: the one place that knows every kind."""

from __future__ import annotations

from collections.abc import Callable

from mailmux.config import VendorConfig
from mailmux.pool_share import PoolShare
from mailmux.vendors.base import AiohttpTransport, PoolSettings, Transport, Vendor
from mailmux.vendors.brevo import BrevoVendor
from mailmux.vendors.mailgun import MailgunVendor
from mailmux.vendors.mailjet import MailjetVendor
from mailmux.vendors.postmark import PostmarkVendor
from mailmux.vendors.resend import ResendVendor
from mailmux.vendors.sandbox import SandboxVendor
from mailmux.vendors.sendgrid import SendGridVendor
from mailmux.vendors.ses import SesVendor
from mailmux.vendors.smtp import SmtpVendor
from mailmux.vendors.sparkpost import SparkPostVendor

Build = Callable[[str, VendorConfig, Transport], Vendor]


def _need(name: str, config: VendorConfig, setting: str) -> str:
    """A setting config validation already requires for this kind (this keeps mypy honest)."""
    value = getattr(config, setting)
    if not isinstance(value, str):
        raise ValueError(f"vendors.{name}.{setting}: required for kind {config.kind}")
    return value


KeyedVendor = SendGridVendor | PostmarkVendor | SparkPostVendor | ResendVendor | BrevoVendor


def _keyed(cls: type[KeyedVendor]) -> Build:
    """ESPs that need only an API key and a base URL."""

    def build(name: str, config: VendorConfig, transport: Transport) -> Vendor:
        return cls(
            name,
            transport,
            api_key=_need(name, config, "api_key"),
            base_url=_need(name, config, "base_url"),
        )

    return build


def _mailgun(name: str, config: VendorConfig, transport: Transport) -> Vendor:
    return MailgunVendor(
        name,
        transport,
        api_key=_need(name, config, "api_key"),
        domain=_need(name, config, "domain"),
        base_url=_need(name, config, "base_url"),
    )


def _mailjet(name: str, config: VendorConfig, transport: Transport) -> Vendor:
    return MailjetVendor(
        name,
        transport,
        api_key=_need(name, config, "api_key"),
        api_secret=_need(name, config, "api_secret"),
        base_url=_need(name, config, "base_url"),
    )


def _ses(name: str, config: VendorConfig, transport: Transport) -> Vendor:
    try:
        return SesVendor(
            name,
            transport,
            region=_need(name, config, "region"),
            access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key,
            base_url=config.base_url,
        )
    except ValueError as err:  # no credentials, only one of the two keys, ...
        raise ValueError(f"vendors.{name}: {err}") from err


_HTTP_KINDS: dict[str, Build] = {
    "sendgrid": _keyed(SendGridVendor),
    "mailgun": _mailgun,
    "postmark": _keyed(PostmarkVendor),
    "sparkpost": _keyed(SparkPostVendor),
    "resend": _keyed(ResendVendor),
    "ses": _ses,
    "mailjet": _mailjet,
    "brevo": _keyed(BrevoVendor),
}


#: Port by TLS mode when the config gives none: submission, submissions, plain SMTP.
SMTP_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
#: An SMTP relay wants few long-lived sessions, not an HTTP-sized pool.
SMTP_POOL_SIZE = 4


def _smtp(name: str, config: VendorConfig) -> SmtpVendor:
    tls = config.tls or "starttls"
    pool_size = config.pool_size if "pool_size" in config.model_fields_set else SMTP_POOL_SIZE
    if (config.username is None) != (config.password is None):
        raise ValueError(f"vendors.{name}: username and password go together")
    return SmtpVendor(
        name,
        host=_need(name, config, "host"),
        port=config.port or SMTP_PORTS[tls],
        username=config.username,
        password=config.password,
        tls=tls,
        connect_timeout=config.connect_timeout,
        pool_size=pool_size,
    )


def build_vendor(name: str, config: VendorConfig) -> Vendor:
    if config.kind == "sandbox":
        return SandboxVendor(name)
    if config.kind == "smtp":
        smtp = _smtp(name, config)
        smtp.share = PoolShare(smtp.pool_size)
        return smtp
    build = _HTTP_KINDS.get(config.kind)
    if build is None:
        raise ValueError(f"vendors.{name}.kind: unknown kind {config.kind!r}")
    pool = PoolSettings(pool_size=config.pool_size, connect_timeout=config.connect_timeout)
    vendor = build(name, config, AiohttpTransport(pool))
    vendor.share = PoolShare(pool.pool_size)
    return vendor
