"""The figures of one benchmark run: medians, ratios, the three targets, cautions, the JSON.

The machine is shared and noisy, so each figure is the median over rounds,
and the throughput target is judged on a ratio of two servers measured in
the same run, alternating, rather than on an absolute number. A figure whose
runs had errors or unexpected statuses is shown with them, and a target
judged on it is "invalid", never "met"; so is a throughput ratio for which
either server did not fill its core (something else set its pace then).
Beside it stands the ratio of requests per CPU-second, which a capped or
crowded server hardly moves: the estimate to read when req/s could not be.
What else could make a figure misleading (other processes busy meanwhile)
is said in `cautions()`, next to the figures, not left for the reader to
notice.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadgen import LoadResult

EMULATOR, PROXY, MAILMUX = "emulator direct", "bare proxy", "mailmux"

MIN_THROUGHPUT_RATIO = 0.70
MAX_ADDED_P50_MS = 1.0
MAX_RSS_MB = 150.0  # decimal megabytes: the stricter reading of "150 MB"
#: Below this share of its core, a server was not what limited its own throughput.
SATURATED = 0.90
#: Other processes using more than this many cores during runs make the figures noisy.
NOISY = 0.15


@dataclass(frozen=True, slots=True)
class Run:
    """One load run against one target; CPU shares are of one core, over the run's wall time."""

    target: str
    round: int
    result: LoadResult
    server_cpu: float | None = None
    emulator_cpu: float | None = None
    background_cpu: float | None = None  # cores other processes on the machine used meanwhile
    load_core_cpu: float | None = None  # busy share of the core the emulator and load ran on


@dataclass(frozen=True, slots=True)
class MemoryRun:
    """A slow-emulator run: one server's resident memory while many requests wait."""

    target: str
    connections: int
    emulator_latency_ms: float
    result: LoadResult
    rss_peak_kib: int  # highest sampled VmRSS
    hwm_kib: int  # VmHWM at the end: the kernel's own peak since the server started
    samples: int
    upstream_connections: int  # to the emulator: the most attempts it had in flight at once

    @property
    def peak_mb(self) -> float:
        return max(self.rss_peak_kib, self.hwm_kib) * 1024 / 1e6


@dataclass(frozen=True, slots=True)
class Figure:
    """One target's medians over its rounds (error counts are totals)."""

    target: str
    rate: float
    p50_ms: float
    p99_ms: float
    unexpected: int
    errors: int
    server_cpu: float | None
    emulator_cpu: float | None
    background_cpu: float | None
    load_core_cpu: float | None
    per_core_rate: float | None  # requests per CPU-second of the server: req/s on a whole core
    lag_p99_ms: float | None
    rounds: int

    @property
    def clean(self) -> bool:
        return self.unexpected == 0 and self.errors == 0


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    limit: str
    measured: str
    status: str  # "met", "NOT met", "invalid", "not measured"


@dataclass
class Report:
    """Everything one invocation measured, plus the settings to read it by."""

    settings: dict[str, Any]
    throughput: list[Run] = field(default_factory=list)
    half_rate: float | None = None
    latency: list[Run] = field(default_factory=list)
    memory: list[MemoryRun] = field(default_factory=list)  # mailmux first, then references
    notes: list[str] = field(default_factory=list)

    def figures(self, runs: Sequence[Run]) -> dict[str, Figure]:
        names = list(dict.fromkeys(run.target for run in runs))
        return {name: _figure(name, [r for r in runs if r.target == name]) for name in names}

    def throughput_ratio(self) -> float | None:
        figures = self.figures(self.throughput)
        if MAILMUX not in figures or PROXY not in figures or figures[PROXY].rate == 0:
            return None
        return figures[MAILMUX].rate / figures[PROXY].rate

    def per_core_ratio(self) -> float | None:
        """mailmux / proxy in requests per CPU-second."""
        figures = self.figures(self.throughput)
        if MAILMUX not in figures or PROXY not in figures:
            return None
        mailmux, proxy = figures[MAILMUX].per_core_rate, figures[PROXY].per_core_rate
        return mailmux / proxy if mailmux and proxy else None

    def round_ratios(self) -> list[float]:
        """mailmux / proxy per round: how much the headline ratio moved between rounds."""
        by_round: dict[int, dict[str, float]] = {}
        for run in self.throughput:
            by_round.setdefault(run.round, {})[run.target] = run.result.rate
        return [
            rates[MAILMUX] / rates[PROXY]
            for _, rates in sorted(by_round.items())
            if rates.get(PROXY) and MAILMUX in rates
        ]

    def added_p50_ms(self, over: str) -> float | None:
        figures = self.figures(self.latency)
        if MAILMUX not in figures or over not in figures:
            return None
        return figures[MAILMUX].p50_ms - figures[over].p50_ms

    def mailmux_memory(self) -> MemoryRun | None:
        return next((run for run in self.memory if run.target == MAILMUX), None)

    def verdicts(self) -> list[Verdict]:
        return [self._throughput_verdict(), self._latency_verdict(), self._memory_verdict()]

    def cautions(self) -> list[str]:
        """Why some figures may mislead, worked out from the figures themselves."""
        found = []
        for figure in self.figures(self.throughput).values():
            cpu = figure.server_cpu
            if figure.target != EMULATOR and cpu is not None and cpu < SATURATED:
                load = figure.load_core_cpu
                culprit = (
                    f"the load core, {load:.0%} busy"
                    if load is not None and load >= SATURATED
                    else "not its own core (other processes, the load core)"
                )
                found.append(
                    f"{figure.target} used only {cpu:.0%} of its core in the throughput runs: "
                    f"its limit was {culprit}"
                    + ("; this flatters mailmux's ratio" if figure.target == PROXY else "")
                )
        for phase, runs in (("throughput", self.throughput), ("latency", self.latency)):
            busy = [run.background_cpu for run in runs if run.background_cpu is not None]
            if busy and max(busy) > NOISY:
                found.append(
                    f"other processes on this machine used up to {max(busy):.2f} cores during "
                    f"the {phase} runs (median {statistics.median(busy):.2f}): figures are noisy"
                )
        return found

    def _throughput_verdict(self) -> Verdict:
        name = "full path throughput vs bare proxy (one core)"
        limit = f">= {MIN_THROUGHPUT_RATIO:.0%}"
        ratio = self.throughput_ratio()
        if ratio is None:
            return Verdict(name, limit, "-", "not measured")
        figures = self.figures(self.throughput)
        clean = figures[MAILMUX].clean and figures[PROXY].clean
        per_core = self.per_core_ratio()
        measured = f"{ratio:.1%}" + ("" if per_core is None else f", per CPU-s {per_core:.1%}")
        starved = [
            f"{f.target} at {f.server_cpu:.0%} CPU"
            for f in (figures[PROXY], figures[MAILMUX])
            if f.server_cpu is not None and f.server_cpu < SATURATED
        ]
        if starved:
            return Verdict(name, limit, f"{measured} ({', '.join(starved)})", "invalid")
        return Verdict(name, limit, measured, _judge(ratio >= MIN_THROUGHPUT_RATIO, clean))

    def _latency_verdict(self) -> Verdict:
        name = "added p50 at half load (mailmux - emulator direct)"
        limit = f"<= {MAX_ADDED_P50_MS:g} ms"
        added = self.added_p50_ms(EMULATOR)
        if added is None:
            return Verdict(name, limit, "-", "not measured")
        figures = self.figures(self.latency)
        clean = figures[MAILMUX].clean and figures[EMULATOR].clean
        return Verdict(name, limit, f"{added:.3f} ms", _judge(added <= MAX_ADDED_P50_MS, clean))

    def _memory_verdict(self) -> Verdict:
        name = "peak resident memory, 1,000 in flight, 500 ms emulator"
        limit = f"<= {MAX_RSS_MB:g} MB"
        memory = self.mailmux_memory()
        if memory is None:
            return Verdict(name, limit, "-", "not measured")
        return Verdict(
            name,
            limit,
            f"{memory.peak_mb:.1f} MB",
            _judge(memory.peak_mb <= MAX_RSS_MB, memory.result.clean),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "throughput": {
                "runs": [_run_json(run) for run in self.throughput],
                "medians": {k: asdict(f) for k, f in self.figures(self.throughput).items()},
                "ratio_mailmux_to_proxy": self.throughput_ratio(),
                "per_core_ratio_mailmux_to_proxy": self.per_core_ratio(),
                "round_ratios": self.round_ratios(),
            },
            "latency": {
                "rate": self.half_rate,
                "runs": [_run_json(run) for run in self.latency],
                "medians": {k: asdict(f) for k, f in self.figures(self.latency).items()},
                "added_p50_ms_vs_emulator": self.added_p50_ms(EMULATOR),
                "added_p50_ms_vs_proxy": self.added_p50_ms(PROXY),
            },
            "memory": [{**asdict(run), "peak_mb": run.peak_mb} for run in self.memory],
            "targets": [asdict(v) for v in self.verdicts()],
            "cautions": self.cautions(),
            "notes": self.notes,
        }


def _judge(passed: bool, clean: bool) -> str:
    if not clean:
        return "invalid"
    return "met" if passed else "NOT met"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _figure(target: str, runs: Sequence[Run]) -> Figure:
    return Figure(
        target=target,
        rate=statistics.median(run.result.rate for run in runs),
        p50_ms=statistics.median(run.result.p50_ms for run in runs),
        p99_ms=statistics.median(run.result.p99_ms for run in runs),
        unexpected=sum(run.result.unexpected for run in runs),
        errors=sum(run.result.errors for run in runs),
        server_cpu=_median([run.server_cpu for run in runs]),
        emulator_cpu=_median([run.emulator_cpu for run in runs]),
        background_cpu=_median([run.background_cpu for run in runs]),
        load_core_cpu=_median([run.load_core_cpu for run in runs]),
        per_core_rate=_median(
            [run.result.rate / run.server_cpu if run.server_cpu else None for run in runs]
        ),
        lag_p99_ms=_median([run.result.lag_p99_ms for run in runs]),
        rounds=len(runs),
    )


def _run_json(run: Run) -> dict[str, Any]:
    return {**asdict(run), "rate": run.result.rate}
