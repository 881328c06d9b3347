"""What building a vendor request costs, per HTTP vendor (`.venv/bin/python benchmarks/bodies.py`).

Two figures per vendor, without a network:

- time: `build_request` plus the send path's exact-size copy for the benchmark's
  8 KB message (workload.py), alone and with a 2 KB attachment; the best of
  seven runs, in CPU time of this thread so that other processes on a shared
  machine inflate it less;
- memory: what building the request for that message with a 7 MiB attachment
  (about the most Postmark takes) allocates at peak (tracemalloc), and the bytes
  the body sends. A streamed body allocates little here: its base64 is encoded
  while it is sent (tests/test_streamed_sends.py bounds a real send).
"""

from __future__ import annotations

import dataclasses
import time
import timeit
import tracemalloc

from workload import native_body

from mailmux.config import VendorConfig
from mailmux.message import Attachment, Message
from mailmux.native import parse_native
from mailmux.vendors.base import HttpVendor, _exact_size
from mailmux.vendors.registry import build_vendor

SETTINGS = {
    "sendgrid": {"api_key": "k"},
    "mailgun": {"api_key": "k", "domain": "mg.example.com"},
    "postmark": {"api_key": "k"},
    "sparkpost": {"api_key": "k"},
    "resend": {"api_key": "k"},
    "ses": {"region": "eu-west-1", "access_key_id": "AKID", "secret_access_key": "s"},
    "mailjet": {"api_key": "k", "api_secret": "s"},
    "brevo": {"api_key": "k"},
}


def vendor(kind: str) -> HttpVendor:
    config = VendorConfig.model_validate({"kind": kind, "weight": 1, **SETTINGS[kind]})
    built = build_vendor(kind, config)
    assert isinstance(built, HttpVendor)
    return built


def build_time(http: HttpVendor, message: Message) -> float:
    """Microseconds per build, the best of seven runs."""
    number = 200 if http.kind == "ses" else 5000
    runs = timeit.repeat(
        lambda: _exact_size(http.build_request(message, "bench-message-id")),
        number=number,
        repeat=7,
        timer=time.thread_time,
    )
    return min(runs) / number * 1e6


def build_peak(http: HttpVendor, message: Message) -> tuple[float, int]:
    """(peak MiB allocated while building, bytes the body sends)."""
    tracemalloc.start()
    try:
        request = _exact_size(http.build_request(message, "bench-message-id"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20, len(request.body)


def main() -> None:
    plain = parse_native(native_body(), now=time.time())
    pdf = Attachment("receipt.pdf", b"%PDF" * 512, "application/pdf")
    small = dataclasses.replace(plain, attachments=(pdf,))
    large = dataclasses.replace(
        plain, attachments=(Attachment("scan.pdf", bytes(7 * 2**20), "application/pdf"),)
    )
    print(f"{'vendor':10} {'8 KB':>9} {'+2 KB pdf':>10} {'7 MiB: peak':>13} {'body':>10}")
    for kind in SETTINGS:
        http = vendor(kind)
        peak, size = build_peak(http, large)
        print(
            f"{kind:10} {build_time(http, plain):7.2f}us {build_time(http, small):8.2f}us"
            f" {peak:9.2f} MiB {size / 2**20:6.1f} MiB"
        )


if __name__ == "__main__":
    main()
