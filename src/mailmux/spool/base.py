"""The Store interface: what the Deliverer, Retrier and warm-up need from durable storage.

One interface, several stores (SQLite now, PostgreSQL later). Callers only see
records and events; how a store reaches durability (group commit, one fsync
for many waiting writers) is its own business. Times are wall-clock epoch
seconds so that several nodes agree on them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class MessageState(StrEnum):
    """A message's state as the API reports it; all but `queued` are terminal."""

    QUEUED = "queued"  # in the spool, waiting for a retry
    SENT = "sent"  # a vendor accepted it
    FAILED = "failed"  # permanent failure; `reason` says why
    EXPIRED = "expired"  # its deadline (or the maximum age) passed before a vendor took it


TERMINAL_STATES = frozenset({MessageState.SENT, MessageState.FAILED, MessageState.EXPIRED})


class EventKind(StrEnum):
    """Every step a message takes; one event row each."""

    RECEIVED = "received"
    ATTEMPT = "attempt"  # detail: outcome, status, reason, latency_ms, retry_after
    SPOOLED = "spooled"  # detail: next_attempt_at
    RETRY_SCHEDULED = "retry_scheduled"  # detail: next_attempt_at
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Event:
    message_id: str
    at: float
    kind: EventKind
    vendor: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """The row for one accepted (or refused) message, without its body."""

    id: str
    state: MessageState
    created_at: float
    updated_at: float
    traffic_class: str
    deadline: float | None = None
    idempotency_key: str | None = None
    vendor: str | None = None  # the vendor that accepted it (sent) or last tried it
    vendor_message_id: str | None = None
    reason: str | None = None  # why it failed or expired
    attempts: int = 0  # attempts made so far, over all vendors
    next_attempt_at: float | None = None  # queued only
    # Fixed at insert, like idempotency_key: what an Idempotency-Key replay is checked
    # against and answered with.
    request_hash: str | None = None  # hex digest of the request that carried the key
    answered: MessageState | None = None  # the state the first answer reported
    # Fixed at insert too: the traffic class's priority when the message arrived (higher is
    # more urgent), so the spool hands out retries most urgent first without a class lookup.
    priority: int = 0


@dataclass(frozen=True, slots=True)
class InDoubt:
    """An attempt a retry began (durably noted) whose outcome was never recorded.

    The node stopped between sending and writing the result: the vendor may
    have accepted the message. The next retry treats it as an ambiguous attempt.
    """

    vendor: str
    started_at: float


@dataclass(frozen=True, slots=True)
class Leased:
    """A spooled message this node holds a lease on until `lease_until`."""

    record: MessageRecord
    payload: bytes
    lease_until: float
    in_doubt: InDoubt | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One operator change (an override set, restored or expired), kept for `mailmux audit`.

    Plain data, so any store keeps it as columns and JSON: `what` is the new
    overrides (`Override.to_json()`), `previous` the ones it replaced or removed.
    """

    at: float
    who: str  # the admin key's name, "anonymous" (loopback, no admin keys) or "mailmux"
    action: str  # weights | drain | pin | restore | expire
    reason: str = ""
    what: Sequence[Mapping[str, Any]] = ()
    previous: Sequence[Mapping[str, Any]] = ()
    id: int | None = None  # given by the store, in the order events were appended


class IdempotencyConflict(KeyError):
    """Another message already holds this idempotency key within the retention window."""


class LeaseLost(Exception):
    """The lease expired and another worker took the message; drop this copy's result."""


class StoreUnavailable(Exception):
    """The store cannot be opened as it is (a file it cannot open, a schema written by a
    newer mailmux): the node must not start, and the operator needs the reason in one line."""


class Store(ABC):
    """Durable storage of messages, their events, and the spool."""

    @abstractmethod
    async def open(self) -> None:
        """Create the schema if needed and start background writers."""

    @abstractmethod
    async def close(self) -> None:
        """Flush pending write-behind records and release resources."""

    @abstractmethod
    async def insert(
        self,
        record: MessageRecord,
        events: Sequence[Event],
        *,
        payload: bytes | None = None,
        durable: bool,
    ) -> None:
        """Store a new message row and its events.

        durable=True returns only once the row is on disk (used when spooling:
        the caller answers "accepted" right after). durable=False queues it for
        the write-behind batch writer and returns at once (used for messages a
        vendor already accepted); it is readable through `get` immediately.
        Raises IdempotencyConflict if `record.idempotency_key` is already taken.
        """

    @abstractmethod
    async def lease_due(
        self,
        *,
        now: float,
        owner: str,
        lease_seconds: float,
        limit: int,
        min_priority: int | None = None,
    ) -> list[Leased]:
        """Lease up to `limit` queued messages due by `now` whose lease is free or expired.

        Highest `priority` first, then earliest `next_attempt_at`, so a backlog of
        bulk mail never stands in front of a due OTP. `min_priority` leaves out
        messages below it (the Retrier's reserved slots take urgent mail only).
        The result is in that order.
        """

    @abstractmethod
    async def begin_attempt(self, message_id: str, *, owner: str, vendor: str, at: float) -> None:
        """Durably note that a retry is about to send the leased message to `vendor`.

        Returns once the note is on disk, before the request goes out, so that a
        node killed mid-attempt leaves the attempt in doubt (`Leased.in_doubt`)
        instead of forgotten. `update` clears it; `release_leases` keeps it.
        Raises LeaseLost if `owner` no longer holds the lease.
        """

    @abstractmethod
    async def release_leases(self, owner: str) -> int:
        """Free every lease `owner` holds (a restarted node reclaims its own at once)."""

    @abstractmethod
    async def make_due(self, now: float) -> int:
        """Make every queued message due later than `now` due at `now`; how many were.

        A vendor came back: mail waiting out its back-off may go now, at the
        pace the limits allow, instead of trickling out as each back-off ends.
        """

    @abstractmethod
    async def update(self, record: MessageRecord, events: Sequence[Event], *, owner: str) -> None:
        """Durably write a leased message's new state and release the lease.

        A terminal state drops the stored payload; any attempt noted by
        `begin_attempt` is settled. Raises LeaseLost if `owner` no longer holds
        the lease.
        """

    @abstractmethod
    async def append_events(self, events: Sequence[Event]) -> None:
        """Durably add events to messages already stored, whatever their state (the
        outcome of a hedge's losing attempt, known after its message was answered)."""

    @abstractmethod
    async def get(self, message_id: str) -> tuple[MessageRecord, list[Event]] | None:
        """A message's record and its events in order, or None."""

    @abstractmethod
    async def find_by_idempotency_key(self, key: str, *, since: float) -> MessageRecord | None:
        """The message stored under `key` no earlier than `since`, or None."""

    @abstractmethod
    async def count_by_state(self) -> dict[MessageState, int]:
        """How many messages are in each state (for status and metrics)."""

    @abstractmethod
    async def save_overrides(
        self,
        overrides: Mapping[str, Mapping[str, Any]],
        *,
        remove: Sequence[str] = (),
        audit: AuditEvent,
    ) -> None:
        """Durably upsert `overrides` (key → `Override.to_json()`), delete those under the
        keys in `remove`, and append `audit`, in one transaction: an override never
        changes without its audit event. Overrides are opaque JSON to the store.
        """

    @abstractmethod
    async def list_overrides(self) -> dict[str, dict[str, Any]]:
        """Every stored override, key → its JSON, in the order they were first saved."""

    @abstractmethod
    async def list_audit(self, *, limit: int) -> list[AuditEvent]:
        """The latest `limit` audit events, oldest first."""

    @abstractmethod
    async def queue_summary(self) -> tuple[int, float | None]:
        """How many messages are queued, and the oldest one's `created_at` (None: none).

        Read at every metrics scrape, so it must stay cheap while most rows are
        sent: it looks at queued rows only, never the whole table.
        """

    @abstractmethod
    async def add_usage(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Durably add `counts` (messages sent, keyed by vendor and UTC day "YYYY-MM-DD") to
        the stored usage counters, in one transaction.

        The counters are increments, never overwritten, so several nodes writing
        their own counts to one store add up instead of losing each other's.
        """

    @abstractmethod
    async def usage(self, day: str) -> dict[str, int]:
        """Messages sent per vendor on the UTC day `day` ("YYYY-MM-DD"), as stored."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until every write-behind record queued so far is on disk."""
