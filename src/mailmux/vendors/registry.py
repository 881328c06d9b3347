"""From a vendor's configuration to a Vendor: the one place that knows every kind."""

from __future__ import annotations

from collections.abc import Callable

from mailmux.config import VendorConfig
from mailmux.vendors.base import AiohttpTransport, PoolSettings, Transport, Vendor
from mailmux.vendors.mailgun import MailgunVendor
from mailmux.vendors.postmark import PostmarkVendor
from mailmux.vendors.sandbox import SandboxVendor
from mailmux.vendors.sendgrid import SendGridVendor


def _need(name: str, config: VendorConfig, setting: str) -> str:
    """A setting config validation already requires for this kind (this keeps mypy honest)."""
    value = getattr(config, setting)
    if not isinstance(value, str):
        raise ValueError(f"vendors.{name}.{setting}: required for kind {config.kind}")
    return value


def _sendgrid(name: str, config: VendorConfig, transport: Transport) -> Vendor:
    return SendGridVendor(
        name,
        transport,
        api_key=_need(name, config, "api_key"),
        base_url=_need(name, config, "base_url"),
    )


def _mailgun(name: str, config: VendorConfig, transport: Transport) -> Vendor:
    return MailgunVendor(
        name,
        transport,
        api_key=_need(name, config, "api_key"),
        domain=_need(name, config, "domain"),
        base_url=_need(name, config, "base_url"),
    )


def _postmark(name: str, config: VendorConfig, transport: Transport) -> Vendor:
    return PostmarkVendor(
        name,
        transport,
        api_key=_need(name, config, "api_key"),
        base_url=_need(name, config, "base_url"),
    )


_HTTP_KINDS: dict[str, Callable[[str, VendorConfig, Transport], Vendor]] = {
    "sendgrid": _sendgrid,
    "mailgun": _mailgun,
    "postmark": _postmark,
}


def build_vendor(name: str, config: VendorConfig) -> Vendor:
    if config.kind == "sandbox":
        return SandboxVendor(name)
    build = _HTTP_KINDS.get(config.kind)
    if build is None:
        raise ValueError(f"vendors.{name}.kind: unknown kind {config.kind!r}")
    pool = PoolSettings(pool_size=config.pool_size, connect_timeout=config.connect_timeout)
    return build(name, config, AiohttpTransport(pool))
