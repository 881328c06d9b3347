"""The embedded spool: a Store on one SQLite file, stdlib `sqlite3` only.

Durability. The file runs in WAL mode with `synchronous=FULL`: every commit
fsyncs the WAL before it returns. (With WAL, `NORMAL` syncs only at
checkpoints, so a power cut can drop the last commits; mailmux answers
"accepted" right after a spooling commit, so those commits must survive.)

Group commit. An fsync costs milliseconds, far more than the statements it
protects, so write operations queue up and run as ONE transaction with ONE
fsync: whatever arrives while a commit is in flight forms the next batch (at
most `max_batch` operations). An operation that can fail on its own (an
idempotency key, a lease) runs inside its own SAVEPOINT, so a conflict or a
lost lease rolls back and fails that caller only. Callers' futures are
resolved after the COMMIT, so nobody hears "stored" before the row is on disk.
SQLite prepares each SQL text once per connection (its statement cache), which
is why the statements here are constants.

Where the work runs. Only the blocking part -- the COMMIT and its fsync (and
any checkpoint SQLite runs with it), and a BEGIN that has to wait for another
process's write lock -- runs on a dedicated commit thread. The statements
themselves (microseconds each) run on the event loop, in slices of `_SLICE`
operations so a large batch never holds the loop for long. The reason is the
GIL: `sqlite3` releases it around every statement, and a thread that wants it
back while the loop is busy with short callbacks can wait for many
milliseconds per statement (measured: 200 trivial statements on a helper
thread took 9 s beside a loop running 0.1 ms callbacks). A thread that ran
every statement would make the spool slowest exactly when mailmux is
busiest; handing it only the commit costs a constant few GIL hand-offs per
batch, however large the batch, and `_off_loop` lends the thread the GIL when
even those are overdue (p99 of a durable insert beside that busy loop: 10 s
without lending, 20 ms with it).

Write-behind. `insert(durable=False)` (a message a vendor already accepted)
only enqueues. Until its batch commits, the record and events wait in an
in-memory map that `get` and `find_by_idempotency_key` consult first; the
entry is dropped after the commit, so a read finds it there or on disk.
Nobody waits for these rows, and a batch costs far less per row when it is
large (a commit of one row costs about four times as much CPU per row as a
commit of sixty-four), so a batch of write-behind operations alone waits up
to `write_behind_linger` seconds, or until `write_behind_batch` operations
are queued, before it starts. The default linger is short (5 ms): in the
benchmark 25 ms cut mailmux's throughput from ~2,000 to ~1,300 req/s (larger
commits keep the commit thread, and so `_off_loop`'s GIL lending, busy for
longer), while no linger at all doubled the added latency at half load.
Anything a caller awaits -- a durable insert,
an update, a lease, `flush`, `close` -- starts the batch at once, lingering
rows included: durable latency is what the sender sees. Consecutive
write-behind inserts without an idempotency key cannot conflict with each
other or with a key, so they share one SAVEPOINT and one `executemany` for
their messages and one for their events; should the group fail anyway (an id
already taken), it is rolled back and rerun one operation at a time, so only
the guilty insert fails.

Reads. Point reads (`get`, `find_by_idempotency_key`) run on the loop on a
separate read-only connection, for the same GIL reason: they are index probes
of tens of microseconds, cheaper than a thread hand-off, and a WAL reader does
not wait for the writer (only for crash recovery of the file, which happens
when the first connection opens it). Each read is a short transaction of its
own and sees every commit finished before it began. `count_by_state` scans the
table, so it runs on its own thread and connection.

Leases. `lease_due` is a write in a batch; every batch starts with `BEGIN
IMMEDIATE`, which takes the database's write lock, so two stores on one file
(two processes) never lease the same message.

Attempts in doubt. `begin_attempt` is a durable write like `update`: it notes
the vendor a retry is about to send to, in the message's row, before the
request goes out. `update` clears the note with the outcome; `release_leases`
keeps it, so a node restarted after a kill -9 leases the message again with
`Leased.in_doubt` set and the Deliverer treats that attempt as ambiguous.

Idempotency keys are unique, but only for `idempotency_retention` seconds: an
insert whose key is held by a row older than that clears the old row's key and
proceeds; a younger holder makes a durable insert raise KeyError. A
write-behind insert cannot raise once it has returned, so if its key turns out
to be taken at commit time the message (already sent) is stored without the
key and a warning is logged.

Usage counters. `add_usage` is a durable write like `update`: one upsert per
(vendor, day) that adds to the stored count (`sent = sent + ?`), so the counts
of several writers add up; `usage` reads a day's rows on the loop like `get`.

Overrides and the audit trail. `save_overrides` is a durable write like
`update`: the overrides and their audit event commit in one transaction. The
store keeps each override as opaque JSON under its key, so the override's
shape is the overrides module's business, and reads them on the loop like
`get` (a few rows).

`sqlite://:memory:` is not supported: the read connections could not see a
private in-memory database; tests use a file in a temporary directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from mailmux.spool.base import (
    TERMINAL_STATES,
    AuditEvent,
    Event,
    EventKind,
    IdempotencyConflict,
    InDoubt,
    Leased,
    LeaseLost,
    MessageRecord,
    MessageState,
    Store,
    StoreUnavailable,
)

logger = logging.getLogger(__name__)

_SLICE = 64  # operations run per event-loop callback before yielding to other callbacks
_LEND_EVERY = 0.002  # a thread job still running after this may be starved of the GIL...
_LEND_FOR = 0.0002  # ...so the loop blocks this long, without the GIL, to let it run
_T = TypeVar("_T")

# Migration i takes the schema from version i to i + 1 (PRAGMA user_version).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            traffic_class TEXT NOT NULL,
            deadline REAL,
            idempotency_key TEXT UNIQUE,
            vendor TEXT,
            vendor_message_id TEXT,
            reason TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            lease_owner TEXT,
            lease_until REAL,
            payload BLOB
        )""",
        # The due scan walks queued rows by next_attempt_at and skips leased ones
        # without reading the row; count_by_state scans it instead of the table.
        "CREATE INDEX messages_due ON messages (state, next_attempt_at, lease_until)",
        # Events are never updated; an INTEGER PRIMARY KEY grows with insertion
        # order, which is the order `get` returns them in.
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            vendor TEXT,
            detail TEXT NOT NULL
        )""",
        "CREATE INDEX events_message ON events (message_id)",
    ),
    (
        # What an Idempotency-Key replay is checked against and answered with.
        "ALTER TABLE messages ADD COLUMN request_hash TEXT",
        "ALTER TABLE messages ADD COLUMN answered TEXT",
        # A retry's attempt that began but whose outcome was never written.
        "ALTER TABLE messages ADD COLUMN in_doubt_vendor TEXT",
        "ALTER TABLE messages ADD COLUMN in_doubt_at REAL",
    ),
    (
        # Runtime overrides, key -> opaque JSON (mailmux.overrides.Override), and the audit
        # trail of every change to them. Rows are plain data so another node can read them.
        """CREATE TABLE overrides (
            key TEXT PRIMARY KEY,
            data TEXT NOT NULL,
            saved_at REAL NOT NULL
        )""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            who TEXT NOT NULL,
            action TEXT NOT NULL,
            reason TEXT NOT NULL,
            what TEXT NOT NULL,
            previous TEXT NOT NULL
        )""",
    ),
    (
        # Messages sent per vendor per UTC day ("YYYY-MM-DD"), for warm-up caps and daily
        # quotas. Only ever incremented, so several nodes can add to one row.
        """CREATE TABLE usage (
            vendor TEXT NOT NULL,
            day TEXT NOT NULL,
            sent INTEGER NOT NULL,
            PRIMARY KEY (vendor, day)
        )""",
    ),
    (
        # Each message's traffic class priority, fixed at insert. Rows queued before this
        # migration get their built-in class's priority (otp 100, bulk 10); any other
        # class, transactional's 50: the priorities a config sets are not known here.
        "ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        """UPDATE messages SET priority = CASE traffic_class
            WHEN 'otp' THEN 100 WHEN 'bulk' THEN 10 ELSE 50 END
            WHERE state = 'queued'""",
        # The due scan walks queued rows most urgent first, then by next_attempt_at, in
        # index order (no sort), and skips leased ones without reading the row. It also
        # serves every query messages_due served (count_by_state, queue_summary and
        # release_leases use its leading `state`), so that index goes.
        """CREATE INDEX messages_due_by_priority
            ON messages (state, priority DESC, next_attempt_at, lease_until)""",
        "DROP INDEX messages_due",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_COLUMNS = (
    "id, state, created_at, updated_at, traffic_class, deadline, idempotency_key,"
    " vendor, vendor_message_id, reason, attempts, next_attempt_at, request_hash, answered,"
    " priority"
)
_INSERT_MESSAGE = f"INSERT INTO messages ({_COLUMNS}, payload) VALUES ({', '.join('?' * 16)})"
_INSERT_EVENT = "INSERT INTO events (message_id, at, kind, vendor, detail) VALUES (?, ?, ?, ?, ?)"
_KEY_HOLDER = "SELECT id, created_at FROM messages WHERE idempotency_key = ?"
_FREE_KEY = "UPDATE messages SET idempotency_key = NULL WHERE id = ?"
_LEASE = f"""UPDATE messages SET lease_owner = ?, lease_until = ?
    WHERE rowid IN (
        SELECT rowid FROM messages
        WHERE state = 'queued' AND priority >= ? AND next_attempt_at <= ?
            AND (lease_until IS NULL OR lease_until < ?)
        ORDER BY priority DESC, next_attempt_at LIMIT ?)
    RETURNING {_COLUMNS}, payload, in_doubt_vendor, in_doubt_at"""
#: `min_priority` when there is none: SQLite's smallest integer, below any stored priority.
_ANY_PRIORITY = -(2**63)
# id, created_at and idempotency_key identify the message and are fixed at insert.
_UPDATE = """UPDATE messages SET state = ?, updated_at = ?, traffic_class = ?, deadline = ?,
        vendor = ?, vendor_message_id = ?, reason = ?, attempts = ?, next_attempt_at = ?,
        lease_owner = NULL, lease_until = NULL, in_doubt_vendor = NULL, in_doubt_at = NULL,
        payload = CASE WHEN ? THEN NULL ELSE payload END
    WHERE id = ? AND lease_owner = ? AND state = 'queued'"""
_BEGIN_ATTEMPT = """UPDATE messages SET in_doubt_vendor = ?, in_doubt_at = ?
    WHERE id = ? AND lease_owner = ? AND state = 'queued'"""
_RELEASE = (
    "UPDATE messages SET lease_owner = NULL, lease_until = NULL"
    " WHERE state = 'queued' AND lease_owner = ?"
)
_MAKE_DUE = "UPDATE messages SET next_attempt_at = ? WHERE state = 'queued' AND next_attempt_at > ?"
_SELECT_MESSAGE = f"SELECT {_COLUMNS} FROM messages WHERE id = ?"
_SELECT_EVENTS = (
    "SELECT message_id, at, kind, vendor, detail FROM events WHERE message_id = ? ORDER BY id"
)
_SELECT_BY_KEY = f"SELECT {_COLUMNS} FROM messages WHERE idempotency_key = ? AND created_at >= ?"
_COUNT = "SELECT state, count(*) FROM messages GROUP BY state"
# An upsert keeps the row's first saved_at, so the listing order stays stable.
_SAVE_OVERRIDE = """INSERT INTO overrides (key, data, saved_at) VALUES (?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET data = excluded.data"""
_DELETE_OVERRIDE = "DELETE FROM overrides WHERE key = ?"
_SELECT_OVERRIDES = "SELECT key, data FROM overrides ORDER BY saved_at, key"
_INSERT_AUDIT = (
    "INSERT INTO audit (at, who, action, reason, what, previous) VALUES (?, ?, ?, ?, ?, ?)"
)
_SELECT_AUDIT = """SELECT id, at, who, action, reason, what, previous FROM
    (SELECT * FROM audit ORDER BY id DESC LIMIT ?) ORDER BY id"""
_ADD_USAGE = """INSERT INTO usage (vendor, day, sent) VALUES (?, ?, ?)
    ON CONFLICT (vendor, day) DO UPDATE SET sent = sent + excluded.sent"""
_SELECT_USAGE = "SELECT vendor, sent FROM usage WHERE day = ? ORDER BY vendor"
# The `messages_due_by_priority` index starts with state: only the queued rows are visited.
_QUEUED = "SELECT count(*), min(created_at) FROM messages WHERE state = 'queued'"

_STATES = {state.value: state for state in MessageState}
_KINDS = {kind.value: kind for kind in EventKind}


def _record(row: Sequence[Any]) -> MessageRecord:
    answered = None if row[13] is None else _STATES[row[13]]
    return MessageRecord(
        id=row[0],
        state=_STATES[row[1]],
        created_at=row[2],
        updated_at=row[3],
        traffic_class=row[4],
        deadline=row[5],
        idempotency_key=row[6],
        vendor=row[7],
        vendor_message_id=row[8],
        reason=row[9],
        attempts=row[10],
        next_attempt_at=row[11],
        request_hash=row[12],
        answered=answered,
        priority=row[14],
    )


def _message_row(record: MessageRecord, payload: bytes | None) -> list[Any]:
    return [
        record.id,
        record.state,
        record.created_at,
        record.updated_at,
        record.traffic_class,
        record.deadline,
        record.idempotency_key,
        record.vendor,
        record.vendor_message_id,
        record.reason,
        record.attempts,
        record.next_attempt_at,
        record.request_hash,
        record.answered,
        record.priority,
        None if record.state in TERMINAL_STATES else payload,  # as update() would leave it
    ]


def _event_rows(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    # StrEnum members bind as their text; orjson takes plain dicts only.
    return [
        (e.message_id, e.at, e.kind, e.vendor, _json(e.detail) if e.detail else "{}")
        for e in events
    ]


def _json(detail: Mapping[str, Any]) -> str:
    return orjson.dumps(detail if type(detail) is dict else dict(detail)).decode()


def _check_queued(record: MessageRecord, has_payload: bool) -> None:
    """A queued row nobody can retry (no body, no due time) would sit in the spool forever."""
    if record.state is MessageState.QUEUED and (record.next_attempt_at is None or not has_payload):
        raise ValueError(f"queued message {record.id} needs a payload and next_attempt_at")


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    # The store serializes each connection's use itself, across the loop and its threads.
    return sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )


def _open_writer(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Connect, switch to WAL + FULL sync and migrate (on the commit thread: it may wait)."""
    conn = _connect(path, busy_timeout)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreUnavailable(f"SQLite refused WAL journal mode ({mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")  # two processes opening a new file create it once
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"its schema version {version} was written by a newer mailmux "
                    f"(this one knows up to {SCHEMA_VERSION})"
                )
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # On the loop, BEGIN must fail at once when the lock is taken; the
        # commit thread does the waiting (see _wait_for_lock).
        conn.execute("PRAGMA busy_timeout = 0")
    except BaseException:
        conn.close()
        raise
    return conn


def _off_loop(
    loop: asyncio.AbstractEventLoop, thread: ThreadPoolExecutor, fn: Callable[..., _T], *args: Any
) -> asyncio.Future[_T]:
    """Run `fn` on `thread`, lending it the GIL if it is overdue.

    A thread waiting for the GIL only forces a switch if the holder keeps it
    for a whole switch interval; a busy event loop releases and retakes it far
    more often (every poll, every socket call), so the waiting thread can
    starve for seconds. When the job is overdue, the loop therefore blocks for
    at most `_LEND_FOR` -- holding no GIL -- so the thread can take its turn.
    """
    finished = threading.Event()
    timer: asyncio.TimerHandle

    def job() -> _T:
        try:
            return fn(*args)
        finally:
            finished.set()

    def lend() -> None:
        nonlocal timer
        if not finished.wait(_LEND_FOR):
            timer = loop.call_later(_LEND_EVERY, lend)

    future = loop.run_in_executor(thread, job)
    timer = loop.call_later(_LEND_EVERY, lend)
    future.add_done_callback(lambda _: timer.cancel())
    return future


def _is_busy(err: sqlite3.Error) -> bool:
    return err.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # any extended BUSY_* code


class _Op:
    """One queued write: `run(cursor, *args)` inside the batch, its result for `future`."""

    __slots__ = ("args", "future", "run", "write_behind")

    def __init__(
        self,
        run: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any] | None,
        write_behind: MessageRecord | None = None,
    ) -> None:
        self.run = run
        self.args = args
        self.future = future
        self.write_behind = write_behind  # the pending record to forget once committed


_Done = tuple[_Op, Any, BaseException | None]


def _groupable(op: _Op) -> bool:
    """A write-behind insert without an idempotency key: it can share a SAVEPOINT."""
    return op.write_behind is not None and op.write_behind.idempotency_key is None


@dataclass(frozen=True, slots=True)
class _Live:
    """What `open()` creates: the loop the store belongs to, connections and threads."""

    loop: asyncio.AbstractEventLoop
    writer: sqlite3.Connection  # statements on the loop, COMMIT on commit_thread, never both
    reader: sqlite3.Connection  # point reads, on the loop
    scanner: sqlite3.Connection  # table scans, on scan_thread
    commit_thread: ThreadPoolExecutor
    scan_thread: ThreadPoolExecutor


class SqliteStore(Store):
    """The Store on one SQLite file; see the module docstring for the design.

    Bound to the event loop that awaits `open()`; use it only from that loop.
    """

    def __init__(
        self,
        path: str,
        *,
        idempotency_retention: float = 86400.0,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        max_batch: int = 1000,
        write_behind_linger: float = 0.005,
        write_behind_batch: int = 256,
    ) -> None:
        if not path or path == ":memory:":
            raise ValueError("the SQLite spool needs a file path (':memory:' is not supported)")
        if write_behind_linger < 0 or write_behind_batch < 1:
            raise ValueError("write_behind_linger must be >= 0 and write_behind_batch >= 1")
        self._path = path
        self._retention = idempotency_retention
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._max_batch = max_batch
        self._linger_for = write_behind_linger
        self._linger_ops = write_behind_batch
        self._pending: dict[str, tuple[MessageRecord, list[Event]]] = {}
        self._pending_keys: dict[str, MessageRecord] = {}
        self._queue: deque[_Op] = deque()
        self._awaited = 0  # queued operations someone awaits: the next batch must not linger
        self._linger: asyncio.TimerHandle | None = None  # armed only while not _working
        self._batch: list[_Done] = []  # run in the open transaction, waiting for its COMMIT
        self._working = False  # a batch step is scheduled or the commit thread has the writer
        self._commits = 0
        self._live: _Live | None = None
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    @property
    def commits(self) -> int:
        """Transactions committed so far (one per batch): shows group commit at work."""
        return self._commits

    async def open(self) -> None:
        if self._live is not None or self._closed:
            raise RuntimeError("a store opens once")
        loop = asyncio.get_running_loop()
        commit_thread = ThreadPoolExecutor(1, thread_name_prefix="mailmux-spool-commit")
        try:
            writer = await _off_loop(
                loop, commit_thread, _open_writer, self._path, self._busy_timeout
            )
        except (sqlite3.Error, StoreUnavailable) as err:
            commit_thread.shutdown()
            # Name the file: "unable to open database file" alone tells no missing
            # directory from a typo.
            where = os.path.abspath(self._path)
            raise StoreUnavailable(f"the spool file {where}: {err}") from err
        except BaseException:
            commit_thread.shutdown()
            raise
        reader = _connect(self._path, self._busy_timeout)
        reader.execute("PRAGMA query_only = ON")
        scanner = _connect(self._path, self._busy_timeout)
        scanner.execute("PRAGMA query_only = ON")
        scan_thread = ThreadPoolExecutor(1, thread_name_prefix="mailmux-spool-scan")
        self._live = _Live(loop, writer, reader, scanner, commit_thread, scan_thread)

    async def close(self) -> None:
        live = self._live
        if live is None or self._closed:
            return
        self._closed = True  # refuse new work; what is queued still commits
        flushed: asyncio.Future[Any] = live.loop.create_future()
        self._enqueue(_Op(_nothing, (), flushed), closing=True)
        try:
            await flushed
        finally:
            for thread, conn in (
                (live.commit_thread, live.writer),
                (live.scan_thread, live.scanner),
            ):
                await _off_loop(live.loop, thread, conn.close)  # after any job in flight
                thread.shutdown()
            live.reader.close()

    async def insert(
        self,
        record: MessageRecord,
        events: Sequence[Event],
        *,
        payload: bytes | None = None,
        durable: bool,
    ) -> None:
        _check_queued(record, payload is not None)
        if durable:
            await self._submit(self._insert, record, events, payload, False)
            return
        key = record.idempotency_key
        if key is not None:
            holder = self._pending_keys.get(key)
            if holder is not None and holder.id != record.id:
                raise IdempotencyConflict(key)
        self._enqueue(_Op(self._insert, (record, events, payload, True), None, record))
        if key is not None:
            self._pending_keys[key] = record
        self._pending[record.id] = (record, list(events))

    async def lease_due(
        self,
        *,
        now: float,
        owner: str,
        lease_seconds: float,
        limit: int,
        min_priority: int | None = None,
    ) -> list[Leased]:
        if limit <= 0:
            return []
        leased: list[Leased] = await self._submit(
            _lease, now, owner, lease_seconds, limit, min_priority
        )
        return leased

    async def begin_attempt(self, message_id: str, *, owner: str, vendor: str, at: float) -> None:
        await self._submit(_begin_attempt, message_id, owner, vendor, at)

    async def release_leases(self, owner: str) -> int:
        released: int = await self._submit(_release, owner)
        return released

    async def make_due(self, now: float) -> int:
        made: int = await self._submit(_make_due, now)
        return made

    async def update(self, record: MessageRecord, events: Sequence[Event], *, owner: str) -> None:
        _check_queued(record, True)  # the stored payload stays while the message is queued
        await self._submit(_update, record, events, owner)

    async def append_events(self, events: Sequence[Event]) -> None:
        # Queued after the message's own insert, so a batch never holds the events first.
        await self._submit(_append_events, events)

    async def get(self, message_id: str) -> tuple[MessageRecord, list[Event]] | None:
        pending = self._pending.get(message_id)
        if pending is not None:
            return pending[0], list(pending[1])
        cur = self._require().reader.cursor()
        cur.execute("BEGIN")  # record and events from one snapshot
        try:
            row = cur.execute(_SELECT_MESSAGE, (message_id,)).fetchone()
            rows = cur.execute(_SELECT_EVENTS, (message_id,)).fetchall() if row else []
        finally:
            cur.execute("COMMIT")
        if row is None:
            return None
        events = [Event(r[0], r[1], _KINDS[r[2]], r[3], orjson.loads(r[4])) for r in rows]
        return _record(row), events

    async def find_by_idempotency_key(self, key: str, *, since: float) -> MessageRecord | None:
        pending = self._pending_keys.get(key)
        if pending is not None:
            return pending if pending.created_at >= since else None
        row = self._require().reader.execute(_SELECT_BY_KEY, (key, since)).fetchone()
        return None if row is None else _record(row)

    async def count_by_state(self) -> dict[MessageState, int]:
        """Committed rows per state; write-behind rows join the count when their batch commits."""
        live = self._require()
        rows = await _off_loop(
            live.loop, live.scan_thread, lambda: live.scanner.execute(_COUNT).fetchall()
        )
        counts = dict.fromkeys(MessageState, 0)
        for state, n in rows:
            counts[_STATES[state]] = n
        return counts

    async def save_overrides(
        self,
        overrides: Mapping[str, Mapping[str, Any]],
        *,
        remove: Sequence[str] = (),
        audit: AuditEvent,
    ) -> None:
        await self._submit(_save_overrides, overrides, remove, audit)

    async def list_overrides(self) -> dict[str, dict[str, Any]]:
        rows = self._require().reader.execute(_SELECT_OVERRIDES).fetchall()
        return {key: orjson.loads(data) for key, data in rows}

    async def list_audit(self, *, limit: int) -> list[AuditEvent]:
        rows = self._require().reader.execute(_SELECT_AUDIT, (limit,)).fetchall()
        return [
            AuditEvent(
                at=r[1],
                who=r[2],
                action=r[3],
                reason=r[4],
                what=orjson.loads(r[5]),
                previous=orjson.loads(r[6]),
                id=r[0],
            )
            for r in rows
        ]

    async def queue_summary(self) -> tuple[int, float | None]:
        """Committed queued rows: a spooled message is durable, so it is always committed."""
        live = self._require()
        count, oldest = await _off_loop(
            live.loop, live.scan_thread, lambda: live.scanner.execute(_QUEUED).fetchone()
        )
        return int(count), oldest

    async def add_usage(self, counts: Mapping[tuple[str, str], int]) -> None:
        if counts:
            await self._submit(_add_usage, counts)

    async def usage(self, day: str) -> dict[str, int]:
        rows = self._require().reader.execute(_SELECT_USAGE, (day,)).fetchall()
        return dict(rows)

    async def flush(self) -> None:
        await self._submit(_nothing)

    # -- the batch machine: queue -> statements on the loop -> COMMIT on the thread --

    def _require(self) -> _Live:
        if self._live is None or self._closed:
            raise RuntimeError("the store is not open")
        return self._live

    async def _submit(self, run: Callable[..., Any], *args: Any) -> Any:
        future: asyncio.Future[Any] = self._require().loop.create_future()
        self._enqueue(_Op(run, args, future))
        return await future

    def _enqueue(self, op: _Op, *, closing: bool = False) -> None:
        live = self._live
        if live is None or (self._closed and not closing):
            raise RuntimeError("the store is not open")
        self._queue.append(op)
        if op.future is not None:
            self._awaited += 1
        if not self._working:
            self._schedule(live)

    def _schedule(self, live: _Live) -> None:
        """Start the next batch now, or after the linger if only write-behind rows wait."""
        if self._awaited or len(self._queue) >= self._linger_ops:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            self._working = True
            live.loop.call_soon(self._step, live)
        elif self._linger is None:
            self._linger = live.loop.call_later(self._linger_for, self._lingered, live)

    def _lingered(self, live: _Live) -> None:
        self._linger = None
        self._working = True
        self._step(live)

    def _step(self, live: _Live) -> None:
        """Run a slice of queued operations in the open transaction; commit when done."""
        writer = live.writer
        if not writer.in_transaction:
            try:
                writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                if not _is_busy(err):
                    self._fail(live, list(self._queue), err)
                    return
                # Another process holds the write lock: wait for it off the loop.
                waited = _off_loop(
                    live.loop, live.commit_thread, _wait_for_lock, writer, self._busy_timeout
                )
                waited.add_done_callback(lambda done: self._locked(live, done))
                return
        cur = writer.cursor()
        queue, batch = self._queue, self._batch
        budget = min(_SLICE, len(queue), self._max_batch - len(batch))
        while budget:
            running = [queue.popleft()]
            if _groupable(running[0]):
                while len(running) < budget and _groupable(queue[0]):
                    running.append(queue.popleft())
            elif running[0].future is not None:
                self._awaited -= 1
            budget -= len(running)
            try:
                if len(running) == 1:
                    batch.append(_run(cur, running[0]))
                else:
                    batch.extend(_run_group(cur, running))
            except Exception as err:
                self._fail(live, [*running, *(done[0] for done in batch)], err)
                return
        if queue and len(batch) < self._max_batch:
            live.loop.call_soon(self._step, live)
            return
        committed = _off_loop(live.loop, live.commit_thread, _commit, writer)
        committed.add_done_callback(lambda done: self._committed(live, done))

    def _locked(self, live: _Live, done: asyncio.Future[None]) -> None:
        err = done.exception()
        if err is not None:
            self._fail(live, list(self._queue), err)
        else:
            self._step(live)

    def _committed(self, live: _Live, done: asyncio.Future[None]) -> None:
        err = done.exception()
        batch, self._batch = self._batch, []
        if err is not None:
            self._fail(live, [entry[0] for entry in batch], err)
            return
        self._commits += 1
        self._settle(batch)
        self._continue(live)

    def _continue(self, live: _Live) -> None:
        self._working = False
        if self._queue:
            self._schedule(live)

    def _fail(self, live: _Live, ops: list[_Op], err: BaseException) -> None:
        """The transaction is gone: every operation in it fails with the same error."""
        if live.writer.in_transaction:
            try:
                live.writer.execute("ROLLBACK")
            except sqlite3.Error as rollback_err:
                logger.error("spool rollback failed: %s", rollback_err)
        logger.error("spool batch of %d operations failed: %s", len(ops), err)
        failed = set(map(id, ops))
        self._queue = deque(op for op in self._queue if id(op) not in failed)
        self._awaited = sum(op.future is not None for op in self._queue)
        self._batch = []
        self._settle([(op, None, err) for op in ops])
        self._continue(live)

    def _settle(self, done: list[_Done]) -> None:
        """After the COMMIT: drop committed write-behind rows and answer the callers."""
        for op, result, error in done:
            record = op.write_behind
            if record is not None:
                self._forget(record)
                if error is not None:
                    logger.error("message %s: write-behind insert failed: %s", record.id, error)
            future = op.future
            if future is None or future.done():  # cancelled callers: the write happened anyway
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _forget(self, record: MessageRecord) -> None:
        pending = self._pending.get(record.id)
        if pending is not None and pending[0] is record:
            del self._pending[record.id]
        key = record.idempotency_key
        if key is not None and self._pending_keys.get(key) is record:
            del self._pending_keys[key]

    # -- the operations, run inside the batch transaction --

    def _insert(
        self,
        cur: sqlite3.Cursor,
        record: MessageRecord,
        events: Sequence[Event],
        payload: bytes | None,
        write_behind: bool,
    ) -> None:
        row = _message_row(record, payload)
        try:
            cur.execute(_INSERT_MESSAGE, row)
        except sqlite3.IntegrityError:
            key = record.idempotency_key
            holder = None if key is None else cur.execute(_KEY_HOLDER, (key,)).fetchone()
            if holder is None or holder[0] == record.id:
                raise  # not the key: the id itself is taken
            if holder[1] < self._clock() - self._retention:
                cur.execute(_FREE_KEY, (holder[0],))
            elif write_behind:
                logger.warning(
                    "message %s: idempotency key already held by %s; stored without it",
                    record.id,
                    holder[0],
                )
                row[6] = None
            else:
                raise IdempotencyConflict(key) from None
            cur.execute(_INSERT_MESSAGE, row)
        if events:
            cur.executemany(_INSERT_EVENT, _event_rows(events))


def _run(cur: sqlite3.Cursor, op: _Op) -> _Done:
    """One operation in its own SAVEPOINT: if it fails, only its own work is undone."""
    cur.execute("SAVEPOINT op")
    try:
        result = op.run(cur, *op.args)
    except Exception as err:
        if not cur.connection.in_transaction:
            raise  # SQLite gave up the whole transaction (disk full, I/O error)
        cur.execute("ROLLBACK TO op")
        done: _Done = (op, None, err)
    else:
        done = (op, result, None)
    cur.execute("RELEASE op")
    return done


def _run_group(cur: sqlite3.Cursor, ops: list[_Op]) -> list[_Done]:
    """Keyless write-behind inserts, all rows at once; one by one only if that fails."""
    messages: list[list[Any]] = []
    events: list[tuple[Any, ...]] = []
    for op in ops:
        record, record_events, payload, _ = op.args
        messages.append(_message_row(record, payload))
        events += _event_rows(record_events)
    cur.execute("SAVEPOINT op")
    try:
        cur.executemany(_INSERT_MESSAGE, messages)
        if events:
            cur.executemany(_INSERT_EVENT, events)
    except Exception:
        if not cur.connection.in_transaction:
            raise
        cur.execute("ROLLBACK TO op")
        cur.execute("RELEASE op")
        return [_run(cur, op) for op in ops]  # find the one that failed
    cur.execute("RELEASE op")
    return [(op, None, None) for op in ops]


def _lease(
    cur: sqlite3.Cursor,
    now: float,
    owner: str,
    lease_seconds: float,
    limit: int,
    min_priority: int | None,
) -> list[Leased]:
    until = now + lease_seconds
    floor = _ANY_PRIORITY if min_priority is None else min_priority
    rows = cur.execute(_LEASE, (owner, until, floor, now, now, limit)).fetchall()
    # RETURNING order is unspecified: put them back in the order they were chosen in.
    rows.sort(key=lambda row: (-row[14], row[11]))
    return [
        Leased(_record(row), row[15], until, None if row[16] is None else InDoubt(*row[16:18]))
        for row in rows
    ]


def _begin_attempt(
    cur: sqlite3.Cursor, message_id: str, owner: str, vendor: str, at: float
) -> None:
    if cur.execute(_BEGIN_ATTEMPT, (vendor, at, message_id, owner)).rowcount != 1:
        raise LeaseLost(message_id)


def _update(
    cur: sqlite3.Cursor, record: MessageRecord, events: Sequence[Event], owner: str
) -> None:
    cur.execute(
        _UPDATE,
        (
            record.state,
            record.updated_at,
            record.traffic_class,
            record.deadline,
            record.vendor,
            record.vendor_message_id,
            record.reason,
            record.attempts,
            record.next_attempt_at,
            record.state in TERMINAL_STATES,
            record.id,
            owner,
        ),
    )
    if cur.rowcount != 1:
        raise LeaseLost(record.id)
    if events:
        cur.executemany(_INSERT_EVENT, _event_rows(events))


def _append_events(cur: sqlite3.Cursor, events: Sequence[Event]) -> None:
    cur.executemany(_INSERT_EVENT, _event_rows(events))


def _save_overrides(
    cur: sqlite3.Cursor,
    overrides: Mapping[str, Mapping[str, Any]],
    remove: Sequence[str],
    audit: AuditEvent,
) -> None:
    cur.executemany(_DELETE_OVERRIDE, [(key,) for key in remove])
    cur.executemany(
        _SAVE_OVERRIDE, [(key, _json(data), audit.at) for key, data in overrides.items()]
    )
    cur.execute(
        _INSERT_AUDIT,
        (
            audit.at,
            audit.who,
            audit.action,
            audit.reason,
            orjson.dumps(list(audit.what)).decode(),
            orjson.dumps(list(audit.previous)).decode(),
        ),
    )


def _add_usage(cur: sqlite3.Cursor, counts: Mapping[tuple[str, str], int]) -> None:
    cur.executemany(_ADD_USAGE, [(vendor, day, n) for (vendor, day), n in counts.items()])


def _release(cur: sqlite3.Cursor, owner: str) -> int:
    return cur.execute(_RELEASE, (owner,)).rowcount


def _make_due(cur: sqlite3.Cursor, now: float) -> int:
    return cur.execute(_MAKE_DUE, (now, now)).rowcount


def _nothing(cur: sqlite3.Cursor) -> None:
    """A flush marker: its batch commits after everything queued before it."""


def _commit(writer: sqlite3.Connection) -> None:
    try:
        writer.execute("COMMIT")
    except sqlite3.Error:
        if writer.in_transaction:
            writer.execute("ROLLBACK")
        raise


def _wait_for_lock(writer: sqlite3.Connection, busy_timeout: float) -> None:
    writer.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    try:
        writer.execute("BEGIN IMMEDIATE")
    finally:
        writer.execute("PRAGMA busy_timeout = 0")
