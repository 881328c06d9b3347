"""The spool: durable storage of messages, events and leases behind one `Store` interface.

`open_store` turns the `store:` URL of mailmux.yaml into a store; the caller
then awaits `store.open()` on the event loop that will use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mailmux.spool.base import Store
from mailmux.spool.sqlite import SqliteStore

_SQLITE_PREFIX = "sqlite:///"  # then a relative path, or a second "/" for an absolute one
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def open_store(
    url: str,
    *,
    idempotency_retention: float = 86400.0,
    clock: Callable[[], float] = time.time,
) -> Store:
    """The store `url` names, not yet opened.

    `sqlite:///mailmux.db` is relative to the working directory,
    `sqlite:////var/lib/mailmux/spool.db` is absolute. Errors never repeat the
    URL itself: a PostgreSQL URL may carry a password.
    """
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError("store URL must look like sqlite:///path or postgresql://host/db")
    if scheme in _POSTGRES_SCHEMES:
        raise ValueError("the PostgreSQL store is not available yet")
    if scheme != "sqlite":
        raise ValueError(f"unsupported store scheme {scheme!r}: use sqlite or postgresql")
    if url == "sqlite://:memory:":
        raise ValueError(
            "sqlite://:memory: is not supported: the spool needs a file (use a temporary one)"
        )
    if not url.startswith(_SQLITE_PREFIX) or len(url) == len(_SQLITE_PREFIX):
        raise ValueError("a SQLite store URL is sqlite:///relative.db or sqlite:////absolute.db")
    return SqliteStore(
        url[len(_SQLITE_PREFIX) :], idempotency_retention=idempotency_retention, clock=clock
    )
