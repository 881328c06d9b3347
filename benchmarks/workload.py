"""What the benchmark sends, and the mailmux configuration it runs.

One message shape everywhere: a transactional email of about 8 KB of JSON
(2 KB text + 6 KB HTML, the size DESIGN.md's proxy figures were measured
at). mailmux gets it in its native form; the bare proxy and the emulator get
the SendGrid Mail Send body that mailmux itself would build from it, so the
three paths carry the same bytes of content and differ only in what they do
with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The bearer key mailmux is configured with: the full path includes the API-key check.
API_KEY = "bench-api-key"
#: The key mailmux and the bare proxy present to the SendGrid emulator (any non-empty key works).
VENDOR_KEY = "bench-sendgrid-key"
VENDOR = "fast"

_SENDER_NAME, _SENDER = "Acme Billing", "billing@acme.example"
_RECIPIENT = "customer@example.net"
_SUBJECT = "Your receipt for order 4711"
_SENTENCE = "Thank you for your order; this line stands for an ordinary receipt's content. "


def _text(size: int) -> str:
    return (_SENTENCE * (size // len(_SENTENCE) + 1))[:size]


_TEXT = _text(2048)
_HTML = "<html><body><p>" + _text(6000) + "</p></body></html>"


def native_body() -> dict[str, Any]:
    """The `POST /v1/messages` body mailmux gets."""
    return {
        "from": f"{_SENDER_NAME} <{_SENDER}>",
        "to": [_RECIPIENT],
        "subject": _SUBJECT,
        "text": _TEXT,
        "html": _HTML,
    }


def sendgrid_body() -> dict[str, Any]:
    """The same message as SendGrid's Mail Send body, as mailmux's mapping builds it."""
    return {
        "personalizations": [{"to": [{"email": _RECIPIENT}]}],
        "from": {"email": _SENDER, "name": _SENDER_NAME},
        "subject": _SUBJECT,
        "content": [
            {"type": "text/plain", "value": _TEXT},
            {"type": "text/html", "value": _HTML},
        ],
    }


def mailmux_config(port: int, db: Path, emulator_url: str) -> dict[str, Any]:
    """One SendGrid vendor pointed at the emulator, with room for 1,000 attempts in flight.

    Everything else stays at its default, so the benchmark measures mailmux as
    shipped (API-key check, health tracking, the SQLite spool's write-behind).
    """
    return {
        "listen": f"127.0.0.1:{port}",
        "store": f"sqlite:///{db}",
        "node_id": "bench",
        "api_keys": [API_KEY],
        "vendors": {
            VENDOR: {
                "kind": "sendgrid",
                "api_key": VENDOR_KEY,
                "base_url": emulator_url,
                "weight": 1,
                "pool_size": 2000,
            }
        },
    }
