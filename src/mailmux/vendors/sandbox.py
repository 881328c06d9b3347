"""The `sandbox` vendor: accepts every message and keeps it in memory.

It is the embedded default, so that a new user can send mail and watch it
routed without an ESP account. It keeps the most recent messages only
(bounded), because it exists to be looked at, not to archive mail.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass

from mailmux.message import Address, Message
from mailmux.vendors.base import AttemptResult, Outcome, Vendor


@dataclass(frozen=True, slots=True)
class SandboxEntry:
    """What the sandbox shows of one accepted message."""

    vendor_message_id: str
    accepted_at: float
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    traffic_class: str

    def to_json(self) -> dict[str, object]:
        return {
            "vendor_message_id": self.vendor_message_id,
            "accepted_at": self.accepted_at,
            "from": self.sender,
            "to": list(self.to),
            "cc": list(self.cc),
            "bcc": list(self.bcc),
            "subject": self.subject,
            "class": self.traffic_class,
        }


def _emails(addresses: tuple[Address, ...]) -> tuple[str, ...]:
    return tuple(a.email for a in addresses)


class SandboxVendor(Vendor):
    """Accepts everything; remembers the last `capacity` messages."""

    kind = "sandbox"

    def __init__(self, name: str, capacity: int = 1000) -> None:
        super().__init__(name)
        self._entries: deque[SandboxEntry] = deque(maxlen=capacity)

    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        entry = SandboxEntry(
            vendor_message_id=f"sandbox-{uuid.uuid4().hex}",
            accepted_at=time.time(),
            sender=message.sender.email,
            to=_emails(message.to),
            cc=_emails(message.cc),
            bcc=_emails(message.bcc),
            subject=message.subject,
            traffic_class=message.traffic_class,
        )
        self._entries.append(entry)
        return AttemptResult(Outcome.ACCEPTED, vendor_message_id=entry.vendor_message_id)

    @property
    def entries(self) -> list[SandboxEntry]:
        """Accepted messages, oldest first."""
        return list(self._entries)
