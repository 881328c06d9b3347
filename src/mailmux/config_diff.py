"""What a config reload changes, decided before anything is swapped.

A reload applies what one node can change while it runs: vendors (added,
removed, their settings), weights and fallbacks, health thresholds, attempt
timeouts and the ambiguous policy, back-off and `max_age`, and every key
(`api_keys`, `clients`, `admin_keys`). A vendor whose connection settings
changed (its kind, key, URL, ...) is *replaced*: a new client, fresh health;
one whose weight, fallback, attempt timeout, rate limit or warm-up schedule
changed is the same vendor with its health history kept.

Listeners, the store, the node id, request limits and the Retrier's pacing
are bound when the node starts: a change to them is reported as needing a
restart and is not applied (the rest of the file is).

Pure: two validated configs in, a `ConfigChange` out.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailmux.config import Config, VendorConfig

#: VendorConfig fields a vendor keeps its client and its health history through.
ROUTING_FIELDS = frozenset({"weight", "fallback", "attempt_timeout", "rate_limit", "warmup"})
#: Top-level sections and settings bound at start (`retry.*` listed one by one below).
RESTART_ONLY = (
    "listen",
    "store",
    "node_id",
    "ingress",
    "smtp",
    "limits",
    "idempotency",
    "metrics",
    "reload",
)
RESTART_ONLY_RETRY = ("poll_interval", "lease_seconds", "batch_size", "concurrency", "reserved")


@dataclass(frozen=True, slots=True)
class ConfigChange:
    added: tuple[str, ...] = ()  # vendors new in the file: fresh health
    removed: tuple[str, ...] = ()  # vendors gone: no new attempts, in-flight ones finish
    replaced: tuple[str, ...] = ()  # connection settings changed: new client, fresh health
    retuned: tuple[str, ...] = ()  # weight, fallback, attempt timeout, limits or warm-up changed
    restart_needed: tuple[str, ...] = ()  # settings this reload did not apply
    other: bool = False  # something else that applies live changed (health, keys, back-off)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.replaced or self.retuned or self.other)

    def summary(self) -> str:
        """One line for the log, the notice and the CLI."""
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("replaced", self.replaced),
                ("retuned", self.retuned),
            )
            if names
        ]
        if self.other:
            parts.append("other settings changed")
        if not parts:
            parts.append("nothing that applies live changed")
        if self.restart_needed:
            parts.append(f"needs a restart to apply: {', '.join(self.restart_needed)}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "replaced": list(self.replaced),
            "retuned": list(self.retuned),
            "restart_needed": list(self.restart_needed),
            "other": self.other,
        }


def diff(old: Config, new: Config) -> ConfigChange:
    """What swapping `old` for `new` changes (vendor names in the new file's order)."""
    added = tuple(n for n in new.vendors if n not in old.vendors)
    removed = tuple(n for n in old.vendors if n not in new.vendors)
    kept = [n for n in new.vendors if n in old.vendors]
    replaced = tuple(n for n in kept if _connection(old.vendors[n]) != _connection(new.vendors[n]))
    retuned = tuple(
        n
        for n in kept
        if n not in replaced and _routing(old.vendors[n]) != _routing(new.vendors[n])
    )
    restart = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
    restart += [
        f"retry.{name}"
        for name in RESTART_ONLY_RETRY
        if getattr(old.retry, name) != getattr(new.retry, name)
    ]
    live = set(Config.model_fields) - set(RESTART_ONLY) - {"vendors", "retry"}
    other = any(getattr(old, name) != getattr(new, name) for name in live) or (
        old.retry.model_dump(exclude=set(RESTART_ONLY_RETRY))
        != new.retry.model_dump(exclude=set(RESTART_ONLY_RETRY))
    )
    return ConfigChange(added, removed, replaced, retuned, tuple(restart), other)


def _connection(vendor: VendorConfig) -> dict[str, object]:
    return vendor.model_dump(exclude=set(ROUTING_FIELDS))


def _routing(vendor: VendorConfig) -> dict[str, object]:
    return vendor.model_dump(include=set(ROUTING_FIELDS))
