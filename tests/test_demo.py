"""`mailmux demo` end to end: the whole story in a subprocess, as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_demo_fails_no_request_and_moves_traffic_off_the_broken_vendor() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "mailmux", "demo", "--duration", "15"],
        capture_output=True,
        text=True,
        timeout=40,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    summary = re.search(
        r"^summary: (\d+) requests: (\d+) sent, (\d+) queued, (\d+) failed$", out, re.M
    )
    assert summary is not None, out
    requests, sent, queued, failed = map(int, summary.groups())
    assert failed == 0 and requests == sent + queued > 500, out
    shift = re.search(r"^shift: primary's share fell below 5% ([\d.]+) s after", out, re.M)
    assert shift is not None and float(shift.group(1)) < 3.0, out
    shares = dict(re.findall(r"^│ (\w+)\s+│ ([\d.]+)%", out, re.M))
    assert float(shares["healthy"]) > 50 and float(shares["down"]) < 5, out
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/dashboard ", out, re.M), out
    for event in ("ejected (latency", "half-open probe", "recovered: failback"):
        assert event in out, out


def test_demo_refuses_a_duration_too_short_for_the_story() -> None:
    from mailmux.cli import main

    assert main(["demo", "--duration", "5"]) == 2
