"""mailmux's hot-path benchmark: one command, one table (`make bench`; `--quick`: a smoke run).

Starts a SendGrid emulator, mailmux and a bare pass-through proxy on the same
stack (bare_proxy.py) and prints, from one run: throughput of mailmux vs the
proxy on one core, latency at half load vs sending straight to the emulator,
and resident memory with 1,000 requests in flight (bench.py says how).

Placement: the server under test is pinned to one core, the emulator, the
load generators and this process to the other, so "one core" means one core
and the load never steals from the server it measures. Only 127.0.0.1 is
used; every process started is stopped, also on Ctrl-C or SIGTERM. Only the
standard library is needed here: the children run on the project's
virtualenv (.venv) when there is one. Exit status: 0 when the run completed
(whether or not the targets were met), 1 when it could not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench import FULL, QUICK, Bench, progress
from generators import Generators, find_wrk
from processes import ChildFailed, Children, choose_cores
from render import render

ROOT = Path(__file__).resolve().parent.parent


def _python() -> str:
    """The project's virtualenv interpreter (mailmux, aiohttp, uvloop), else this one."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _raise_file_limit(wanted: int = 65536) -> None:
    """1,000 client and 1,000 upstream connections need more descriptors than a default 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (and SIGINT, even if the shell started us ignoring it) unwinds like Ctrl-C,
    through the `with` blocks that stop every child."""
    raise KeyboardInterrupt


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (~40 s)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="closed-loop generator: wrk (installed with apt-get if missing), "
        "benchmarks/loadgen.py, or wrk when available (default)",
    )
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    plan = QUICK if args.quick else FULL
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    _raise_file_limit()
    wrk: str | None = None
    notes: list[str] = []
    if args.loadgen != "python":
        wrk, how = find_wrk(install=not args.no_install)
        if wrk is None:
            if args.loadgen == "wrk":
                print(f"run.py: {how}", file=sys.stderr)
                return 1
            notes.append(how)
            progress(f"note: {how}")
    cores = choose_cores()
    if cores.load is not None:
        os.sched_setaffinity(0, {cores.load})  # this process's own work stays off the server core
    else:
        notes.append("not pinned: fewer than 2 cores or no taskset")
        progress("note: running unpinned (needs 2 cores and taskset)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMUX_")}
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="mailmux-bench-") as tmp,
            Children(Path(tmp), env) as children,
        ):
            bench = Bench(plan, children, cores, Generators(_python(), wrk), Path(tmp))
            bench.report.notes.extend(notes)
            report = bench.run()
    except ChildFailed as err:
        print(f"run.py: benchmark failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("run.py: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    report.settings["wall_seconds"] = round(time.monotonic() - started, 1)
    print(render(report))
    print(f"\n(run took {report.settings['wall_seconds']:g} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
