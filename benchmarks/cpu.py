"""CPU accounting over one load run: the servers' shares, each core's load, other processes.

The machine is shared, so a figure can be distorted by work nobody in the
benchmark did. Two readings taken around a run tell:

- each watched server's share of a core: a server below ~100% was not what
  limited its own throughput;
- each core's busy share: a saturated load core caps whatever it feeds;
- the user-mode CPU of processes outside the benchmark ("others"). Kernel
  time is left out of that sum on purpose: most of it is the loopback
  traffic and fsyncs of the benchmark itself, done in softirq and kernel
  threads that no process of ours is charged for.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from processes import Child

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Shares:
    """Over one interval: watched servers' shares of a core, each core's busy share, others."""

    watched: list[float]
    cores: dict[int, float]  # by core number
    others: float  # cores' worth of user-mode CPU taken by processes outside the benchmark


@dataclass(frozen=True, slots=True)
class CpuReading:
    """CPU seconds used so far, read together so that shares over an interval add up."""

    wall: float
    machine_user: float  # user-mode CPU of every process on every core
    ours_user: float  # user-mode CPU of the orchestrator and every child it started
    core_busy: dict[int, float]  # non-idle seconds by core number
    watched: tuple[float, ...]  # user + system seconds of each watched child

    def since(self, start: CpuReading) -> Shares:
        wall = self.wall - start.wall
        if wall <= 0:
            return Shares([0.0] * len(self.watched), dict.fromkeys(self.core_busy, 0.0), 0.0)
        others = (self.machine_user - start.machine_user) - (self.ours_user - start.ours_user)
        return Shares(
            [(b - a) / wall for a, b in zip(start.watched, self.watched, strict=True)],
            {n: (busy - start.core_busy.get(n, busy)) / wall for n, busy in self.core_busy.items()},
            max(0.0, others / wall),
        )


def read(running: Sequence[Child], watched: Sequence[Child]) -> CpuReading:
    """A reading now. `running`: every live child of ours (finished ones count via rusage)."""
    machine_user, core_busy = _proc_stat()
    ours = 0.0
    for child in running:
        with contextlib.suppress(FileNotFoundError):  # exited a moment ago: a tiny loss
            ours += child.cpu_times()[0]
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours += own.ru_utime + reaped.ru_utime
    times = tuple(sum(child.cpu_times()) for child in watched)
    return CpuReading(time.monotonic(), machine_user, ours, core_busy, times)


def _proc_stat() -> tuple[float, dict[int, float]]:
    """(user + nice seconds of the whole machine, busy seconds of each core) from /proc/stat."""
    machine_user = 0.0
    cores: dict[int, float] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            break
        name, *fields = line.split()
        ticks = [int(field) for field in fields[:8]]
        user, nice, _system, idle, iowait = ticks[:5]
        if name == "cpu":
            machine_user = (user + nice) / _CLOCK_TICKS
        else:
            cores[int(name[3:])] = (sum(ticks) - idle - iowait) / _CLOCK_TICKS
    return machine_user, cores
