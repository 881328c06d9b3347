"""What every HTTP vendor inherits from the shared pipeline in `vendors/base.py`.

Tested once here for every HTTP kind, rather than once per ESP test file: the
behaviour lives in `HttpVendor.send`, not in the ESP mappings.
"""

from __future__ import annotations

import pytest
from test_registry import MINIMAL
from vendor_kit import MESSAGE_ID, FakeTransport, minimal_message

from mailmux.config import VENDOR_KINDS, VendorConfig
from mailmux.vendors.base import AttemptResult, HttpVendor, Outcome, TransportError
from mailmux.vendors.registry import build_vendor

HTTP_KINDS = sorted(kind for kind in VENDOR_KINDS if kind not in ("sandbox", "smtp"))


def http_vendor(kind: str, transport: FakeTransport) -> HttpVendor:
    config = VendorConfig.model_validate({"kind": kind, "weight": 1, **MINIMAL[kind]})
    vendor = build_vendor("v1", config)
    assert isinstance(vendor, HttpVendor)
    vendor.transport = transport
    return vendor


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize(
    ("sent", "outcome"), [(False, Outcome.RETRIABLE), (True, Outcome.AMBIGUOUS)]
)
async def test_transport_errors_map_on_whether_the_request_left(
    kind: str, sent: bool, outcome: Outcome
) -> None:
    transport = FakeTransport(TransportError("boom", sent=sent))
    result = await http_vendor(kind, transport).send(
        minimal_message(), timeout=1.0, message_id=MESSAGE_ID
    )
    assert result == AttemptResult(outcome, reason="boom")
    assert len(transport.calls) == 1
