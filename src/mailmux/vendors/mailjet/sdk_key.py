"""Telling the caller's Idempotency-Key from the one `mailjet-rest` makes up.

`mailjet-rest` (1.9) adds an `Idempotency-Key` to every POST whose payload is
a dict or list unless the caller gave one: the SHA-256 of the payload as
`json.dumps(..., sort_keys=True, default=str)` with the keys `CustomID`,
`EventPayload` and `SandboxMode` removed at every depth. It is a fingerprint
of the content, not a statement that two sends are one: the same receipt to
the same person twice in a day gets the same key, and two sends that differ
only in their CustomID do too. mailmux honours an Idempotency-Key for a day
(`idempotency.retention_seconds`), so taking the fingerprint as a key would
silently drop the second of two legitimate sends, or refuse it as a reused
key. A key that is exactly the fingerprint of the body is therefore taken
as no key at all; a key the caller chose (`headers={"Idempotency-Key": ...}`,
which the SDK leaves alone) is honoured as on every other API.

The price: the SDK's own retry over https of a request mailmux did accept
(a lost answer) may send twice, as it would at Mailjet, which documents no
deduplication. mailmux answers a status the SDK retries (429, 5xx) only
when nothing was accepted.

The fingerprint is recomputed from the body with the standard library's
`json`, which reads back exactly what `requests` wrote from the caller's
dict; only a key shaped like one (64 lower-case hex digits) is checked, so
other requests pay nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_VOLATILE = frozenset({"CustomID", "EventPayload", "SandboxMode"})
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def made_by_sdk(key: str, body: bytes) -> bool:
    """Whether `key` is what `mailjet-rest` would have generated for this body."""
    if not _FINGERPRINT.fullmatch(key):
        return False
    try:
        payload = json.loads(body)
        serialized = json.dumps(_strip(payload), sort_keys=True, default=str)
    except (ValueError, RecursionError, TypeError):  # not JSON, or nested past any SDK payload
        return False
    return hashlib.sha256(serialized.encode()).hexdigest() == key


def _strip(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _strip(v) for k, v in data.items() if k not in _VOLATILE}
    if isinstance(data, list):
        return [_strip(item) for item in data]
    return data
