"""The receipt a caller gets back, and message ids."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from mailmux.spool.base import MessageRecord, MessageState
from mailmux.vendors.base import HttpResponse


def new_message_id() -> str:
    """A time-ordered id (48-bit ms timestamp + 64 random bits, hex): sorts by arrival."""
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


@dataclass(frozen=True, slots=True)
class Receipt:
    """What `POST /v1/messages` answers: where the message is now."""

    id: str
    state: MessageState
    vendor: str | None = None
    vendor_message_id: str | None = None
    reason: str | None = None
    #: The ESP's own answer, when the deciding attempt passed the caller's request
    #: through to a vendor of the ESP whose API it used (not stored: a replay rebuilds it).
    passed_through: HttpResponse | None = None

    @classmethod
    def from_record(
        cls, record: MessageRecord, passed_through: HttpResponse | None = None
    ) -> Receipt:
        return cls(
            id=record.id,
            state=record.state,
            vendor=record.vendor if record.state == MessageState.SENT else None,
            vendor_message_id=record.vendor_message_id,
            reason=record.reason,
            passed_through=passed_through,
        )

    @classmethod
    def first_answer(cls, record: MessageRecord) -> Receipt:
        """The receipt as the first answer gave it (what an Idempotency-Key replays).

        A terminal state never changes, so only a message first answered
        `queued` can differ from its record now; that answer carried no vendor.
        """
        if record.answered is MessageState.QUEUED:
            return cls(id=record.id, state=MessageState.QUEUED)
        return cls.from_record(record)

    def to_json(self) -> dict[str, str | None]:
        body: dict[str, str | None] = {
            "id": self.id,
            "state": self.state.value,
            "vendor": self.vendor,
            "vendor_message_id": self.vendor_message_id,
        }
        if self.reason is not None:
            body["reason"] = self.reason
        return body
