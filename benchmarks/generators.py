"""Which load generator runs a phase, and its command line.

Closed-loop load (throughput, memory) uses wrk when it is there: a C event
loop spends far less of the shared load core per request than any Python
client, so more of that core is left to the emulator. Open-loop load
(latency at a fixed rate) always uses benchmarks/loadgen.py, which measures
from each request's due time; Debian's wrk has no fixed-rate mode.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
LUA_SCRIPT = HERE / "post.lua"
LOADGEN = HERE / "loadgen.py"
#: wrk's own per-request timeout; the memory phase waits 500 ms per request by design.
WRK_TIMEOUT = "10s"
_INSTALL_TIMEOUT = 300


@dataclass(frozen=True, slots=True)
class Request:
    """What a generator sends: one POST, always the same, and the status that means success."""

    url: str
    body_file: Path
    headers: tuple[str, ...]
    expect: int


@dataclass(frozen=True, slots=True)
class Generators:
    """Builds the argv of each kind of run; `wrk` None means the Python fallback for everything."""

    python: str
    wrk: str | None

    @property
    def closed_loop_name(self) -> str:
        return "wrk (benchmarks/post.lua)" if self.wrk else "benchmarks/loadgen.py"

    def closed(self, request: Request, connections: int, seconds: float) -> list[str]:
        """Fixed concurrency for a fixed time (wrk takes whole seconds: rounded up)."""
        if self.wrk is None:
            return [*self._loadgen(request, seconds), "--connections", str(connections)]
        headers = [arg for header in request.headers for arg in ("-H", header)]
        return [
            self.wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, math.ceil(seconds))}s",
            f"--timeout={WRK_TIMEOUT}",
            *headers,
            "-s",
            str(LUA_SCRIPT),
            request.url,
            "--",
            str(request.body_file),
            str(request.expect),
        ]

    def open(self, request: Request, rate: float, seconds: float) -> list[str]:
        """Fixed arrival rate for a fixed time, latency from each request's due time."""
        return [*self._loadgen(request, seconds), "--rate", f"{rate:.3f}"]

    def _loadgen(self, request: Request, seconds: float) -> list[str]:
        argv = [self.python, str(LOADGEN), "--url", request.url]
        argv += ["--body-file", str(request.body_file), "--expect", str(request.expect)]
        argv += ["--duration", f"{seconds:g}"]
        for header in request.headers:
            argv += ["--header", header]
        return argv


def find_wrk(install: bool) -> tuple[str | None, str]:
    """wrk's path (installing the Debian package when allowed and possible) and a note saying how.

    Installing needs root and apt-get; `apt-get update` runs only when the
    first attempt fails, since the package lists may simply be missing.
    """
    found = shutil.which("wrk")
    if found:
        return found, "wrk found"
    if not install:
        return None, "wrk not installed and --no-install given: using benchmarks/loadgen.py"
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return None, "wrk not installed and cannot apt-get it here: using benchmarks/loadgen.py"
    print("installing wrk (apt-get install -y wrk) ...", file=sys.stderr, flush=True)
    install_wrk = [apt, "install", "-y", "-q", "wrk"]
    if _quiet(install_wrk) or (_quiet([apt, "update", "-q"]) and _quiet(install_wrk)):
        installed = shutil.which("wrk")
        if installed:
            return installed, "wrk installed with apt-get"
    return None, "apt-get install wrk failed: using benchmarks/loadgen.py"


def _quiet(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=_INSTALL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
