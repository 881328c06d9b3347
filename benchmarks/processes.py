"""The child processes of a benchmark run: pinned to a core, ready when they say so, always stopped.

Every server and load generator runs as its own process so that the kernel,
not Python, decides who gets which core: `taskset -c N` pins a process and
every thread it starts (mailmux's SQLite commit thread included) before the
first instruction runs. The orchestrator itself stays synchronous and light;
it only reads logs and /proc.

Each child writes stdout and stderr to a log file rather than a pipe: nobody
has to drain it, and its tail explains a child that died. Children start in
their own session, so a Ctrl-C in the terminal reaches only the orchestrator,
which then stops each child it started, by pid, in reverse order.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_STOP_TIMEOUT = 10.0
_POLL = 0.02
_ESTABLISHED = "01"  # the st column of /proc/net/tcp


class ChildFailed(RuntimeError):
    """A child died, never got ready, or overran; the message carries its log's tail."""


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory of a process from /proc/<pid>/status, in KiB."""

    rss_kib: int  # VmRSS: resident now
    peak_kib: int  # VmHWM: the highest VmRSS since the process started


@dataclass(frozen=True, slots=True)
class Cores:
    """Which core runs the server under test and which the emulator and load (None: unpinned)."""

    server: int | None
    load: int | None

    @property
    def pinned(self) -> bool:
        return self.server is not None


def choose_cores() -> Cores:
    """Two distinct cores from this process's affinity set, if `taskset` can pin to them.

    Sharing one core would make the load generator steal time from the server
    it measures, so with fewer than two cores the run goes on unpinned and
    says so.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or shutil.which("taskset") is None:
        return Cores(None, None)
    return Cores(allowed[0], allowed[1])


class Child:
    """One started process and its log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def cpu_times(self) -> tuple[float, float]:
        """User and system CPU seconds of the process and all its threads so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS

    def memory(self) -> Memory:
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])  # "12345 kB"
        return Memory(values["VmRSS"], values["VmHWM"])

    def connections_to(self, port: int) -> int:
        """Established TCP connections this process holds to `port` (IPv4).

        A client pool keeps its connections open between requests, so the
        count after a run is the most requests it ever had in flight at once.
        """
        fd_dir = Path(f"/proc/{self.pid}/fd")
        sockets = set()
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                sockets.add(target[len("socket:[") : -1])
        count = 0
        for line in Path(f"/proc/{self.pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == _ESTABLISHED and fields[9] in sockets:
                count += 1
        return count

    def wait_for(self, marker: str, timeout: float) -> None:
        """Block until `marker` appears in the log (the child's "I am listening" line)."""
        deadline = time.monotonic() + timeout
        while marker not in self.log_text():
            if self.popen.poll() is not None:
                raise ChildFailed(
                    f"{self.name} exited with {self.popen.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise ChildFailed(
                    f"{self.name} did not log {marker!r} within {timeout:g}s:\n" + self.log_tail()
                )
            time.sleep(_POLL)

    def stop(self) -> None:
        """SIGTERM (the graceful path every server here handles), SIGKILL if it lingers."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class Children:
    """Starts children in a work directory; stops every one of them on exit, whatever happens."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self._started: list[Child] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(self, name: str, argv: Sequence[str], core: int | None) -> Child:
        """Start `argv`, pinned to `core` when given; its output goes to <workdir>/<name>.log."""
        pinned = ["taskset", "-c", str(core), *argv] if core is not None else list(argv)
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                pinned,
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, popen, log_path)
        self._started.append(child)
        return child

    def run(
        self,
        name: str,
        argv: Sequence[str],
        core: int | None,
        timeout: float,
        every: tuple[float, Callable[[], None]] | None = None,
    ) -> str:
        """Run a short-lived child (a load generator) to completion and return its output.

        `every=(seconds, callback)` calls back periodically while it runs: the
        memory phase samples the server's RSS that way. A child that fails or
        overruns `timeout` raises ChildFailed (and is killed).
        """
        child = self.start(name, argv, core)
        deadline = time.monotonic() + timeout
        interval, callback = every if every is not None else (_POLL, None)
        try:
            while child.popen.poll() is None:
                if time.monotonic() > deadline:
                    raise ChildFailed(f"{name} ran past {timeout:g}s:\n" + child.log_tail())
                if callback is not None:
                    callback()
                time.sleep(interval)
        finally:
            child.stop()
            self._started.remove(child)
        if child.popen.returncode != 0:
            raise ChildFailed(f"{name} exited with {child.popen.returncode}:\n" + child.log_tail())
        return child.log_text()

    def running(self) -> list[Child]:
        """The children still running (polling reaps the others, whose CPU time then
        counts in this process's RUSAGE_CHILDREN)."""
        return [child for child in self._started if child.popen.poll() is None]

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self._started:
            self._started.remove(child)

    def stop_all(self) -> None:
        while self._started:
            self._started.pop().stop()
