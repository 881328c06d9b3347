"""Every configurable kind builds into a vendor of that kind: config and registry agree."""

from __future__ import annotations

from typing import Any

import pytest

from mailmux.config import VENDOR_KINDS, VendorConfig
from mailmux.vendors.registry import build_vendor
from mailmux.vendors.smtp import SmtpVendor

#: The settings each kind requires, with placeholder values.
MINIMAL: dict[str, dict[str, Any]] = {
    "sandbox": {},
    "sendgrid": {"api_key": "k"},
    "mailgun": {"api_key": "k", "domain": "mg.example.com"},
    "postmark": {"api_key": "k"},
    "sparkpost": {"api_key": "k"},
    "resend": {"api_key": "k"},
    "ses": {"region": "eu-west-1", "access_key_id": "AKID", "secret_access_key": "s"},
    "mailjet": {"api_key": "k", "api_secret": "s"},
    "brevo": {"api_key": "k"},
    "smtp": {"host": "127.0.0.1", "port": 2525},
}


def test_every_kind_has_a_minimal_example() -> None:
    assert set(VENDOR_KINDS) <= set(MINIMAL)


@pytest.mark.parametrize("kind", sorted(VENDOR_KINDS))
async def test_kind_builds_a_vendor_of_that_kind(kind: str) -> None:
    config = VendorConfig.model_validate({"kind": kind, "weight": 1, **MINIMAL[kind]})
    vendor = build_vendor("v1", config)
    try:
        assert (vendor.name, vendor.kind) == ("v1", kind)
    finally:
        await vendor.close()


@pytest.mark.parametrize(("tls", "port"), [("starttls", 587), ("implicit", 465), ("none", 25)])
async def test_smtp_defaults_follow_the_tls_mode(tls: str, port: int) -> None:
    config = VendorConfig.model_validate({"kind": "smtp", "weight": 1, "host": "h", "tls": tls})
    vendor = build_vendor("relay", config)
    assert isinstance(vendor, SmtpVendor)
    assert (vendor.port, vendor.pool_size) == (port, 4)  # a few sessions, not an HTTP pool
    await vendor.close()


async def test_smtp_pool_size_and_port_can_be_set() -> None:
    config = VendorConfig.model_validate(
        {"kind": "smtp", "weight": 1, "host": "h", "port": 2525, "pool_size": 9}
    )
    vendor = build_vendor("relay", config)
    assert isinstance(vendor, SmtpVendor)
    assert (vendor.port, vendor.pool_size) == (2525, 9)
    await vendor.close()


def test_smtp_username_without_password_is_refused() -> None:
    config = VendorConfig.model_validate(
        {"kind": "smtp", "weight": 1, "host": "h", "username": "u"}
    )
    with pytest.raises(ValueError, match="username and password go together"):
        build_vendor("relay", config)
