"""Every configurable kind builds into a vendor of that kind: config and registry agree."""

from __future__ import annotations

from typing import Any

import pytest

from mailmux.config import VENDOR_KINDS, VendorConfig
from mailmux.vendors.registry import build_vendor

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
