"""From a vendor's configuration to a Vendor: the one place that knows every kind."""

from __future__ import annotations

from mailmux.config import VendorConfig
from mailmux.vendors.base import AiohttpTransport, PoolSettings, Vendor
from mailmux.vendors.sandbox import SandboxVendor
from mailmux.vendors.sendgrid import SendGridVendor


def build_vendor(name: str, config: VendorConfig) -> Vendor:
    pool = PoolSettings(pool_size=config.pool_size, connect_timeout=config.connect_timeout)
    if config.kind == "sandbox":
        return SandboxVendor(name)
    if config.kind == "sendgrid":
        if config.api_key is None:  # config validation guarantees it; this keeps mypy honest
            raise ValueError(f"vendors.{name}.api_key: required for kind sendgrid")
        kwargs = {"base_url": config.base_url} if config.base_url else {}
        return SendGridVendor(name, AiohttpTransport(pool), api_key=config.api_key, **kwargs)
    raise ValueError(f"vendors.{name}.kind: unknown kind {config.kind!r}")
