"""The faults an emulator injects into its ESP API routes, and their JSON form.

Faults are one immutable value, replaced as a whole by `POST /_emulator/faults`
(`{}` clears everything), so a handler that read them once sees a consistent
set. Two kinds:

- per-request faults — `status`, `latency_ms`, `hang`, `reset` — hit a
  fraction `rate` of API requests (drawn from the emulator's random source);
  on a hit the delay comes first, then the hang, reset or error status;
  with `accept` the message is stored before any of them, so the ESP has
  taken it though its answer comes late, never, as a reset or as an error:
  what makes sending it again a duplicate;
- `down` closes the listening socket, so new connections are refused.

`for_ms` makes the whole set temporary: when it runs out the faults clear by
themselves (and a `down` emulator listens again on the same port).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class FaultError(ValueError):
    """A fault specification that cannot be applied; the text says which field and why."""


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, and for how many requests; the default value is "nothing"."""

    status: int | None = None  # answer with this status and an ESP-shaped error body
    rate: float = 1.0  # fraction of API requests the per-request faults hit
    retry_after: float | None = None  # seconds, sent as Retry-After with `status`
    latency_ms: float = 0.0  # delay before answering
    hang: bool = False  # read the request, never answer (until faults change)
    reset: bool = False  # read the request, then abort the connection (RST)
    accept: bool = False  # store the message first, then apply the faults above
    down: bool = False  # stop listening: connections are refused
    for_ms: float | None = None  # clear all faults after this long

    def __post_init__(self) -> None:
        if self.status is not None and not 400 <= self.status <= 599:
            raise FaultError(f"status: must be an error status 400 to 599, got {self.status}")
        if not 0.0 <= self.rate <= 1.0:
            raise FaultError(f"rate: must be between 0 and 1, got {self.rate}")
        if self.retry_after is not None:
            if self.status is None:
                raise FaultError("retry_after: only meaningful with a status")
            if self.retry_after < 0:
                raise FaultError(f"retry_after: must be ≥ 0, got {self.retry_after}")
        if self.latency_ms < 0:
            raise FaultError(f"latency_ms: must be ≥ 0, got {self.latency_ms}")
        if self.for_ms is not None and self.for_ms <= 0:
            raise FaultError(f"for_ms: must be > 0, got {self.for_ms}")
        if self.accept and not self.per_request:
            raise FaultError("accept: only meaningful with status, latency_ms, hang or reset")
        endings = [name for name, on in self._endings() if on]
        if len(endings) > 1:
            raise FaultError(f"{' and '.join(endings)}: choose one way for a request to end")

    def _endings(self) -> tuple[tuple[str, bool], ...]:
        return (("status", self.status is not None), ("hang", self.hang), ("reset", self.reset))

    @property
    def per_request(self) -> bool:
        """Whether API requests need to look at faults at all (the fast path skips them)."""
        return self.status is not None or self.hang or self.reset or self.latency_ms > 0

    @classmethod
    def from_json(cls, data: object) -> Faults:
        """Parse the body of `POST /_emulator/faults`; unknown keys are errors (typos)."""
        if not isinstance(data, Mapping):
            raise FaultError("faults must be a JSON object")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise FaultError(f"{', '.join(map(str, unknown))}: unknown fault")
        return cls(
            status=_optional_int(data, "status"),
            rate=_number(data, "rate", 1.0),
            retry_after=_optional_number(data, "retry_after"),
            latency_ms=_number(data, "latency_ms", 0.0),
            hang=_flag(data, "hang"),
            reset=_flag(data, "reset"),
            accept=_flag(data, "accept"),
            down=_flag(data, "down"),
            for_ms=_optional_number(data, "for_ms"),
        )

    def to_json(self) -> dict[str, object]:
        """The fields that differ from "no fault"; `{}` when nothing is injected."""
        default = Faults()
        return {
            name: getattr(self, name)
            for name in _ORDER
            if getattr(self, name) != getattr(default, name)
        }


_ORDER = (
    "status",
    "rate",
    "retry_after",
    "latency_ms",
    "hang",
    "reset",
    "accept",
    "down",
    "for_ms",
)
_FIELDS = frozenset(_ORDER)


def _flag(data: Mapping[str, object], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise FaultError(f"{key}: must be true or false")
    return value


def _optional_number(data: Mapping[str, object], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{key}: must be a number")
    return float(value)


def _number(data: Mapping[str, object], key: str, default: float) -> float:
    value = _optional_number(data, key)
    return default if value is None else value


def _optional_int(data: Mapping[str, object], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"{key}: must be an integer")
    return value
