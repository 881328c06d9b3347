"""The outage-backlog drill as a benchmark: drain rate against the configured limit
(`make bench-backlog`, about a minute and a half).

Runs `tests/backlog_kit.run_drill` (the same drill `tests/test_backlog.py`
judges): mailmux in its own process, two sendgrid emulators at 200 msg/s
each answering after 100 ms, 20,000 bulk and transactional messages spooled
while both were down, OTPs at 10/s while the spool drains. Prints the drain
rate as a share of the limit (issue 10's target: at least 90 %), the OTP
latency (p99 under 500 ms, none expired) and the busiest second per vendor.
Everything runs on 127.0.0.1; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from backlog_kit import run_drill  # the drill lives with the tests


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--per-second", type=float, default=200.0, help="each vendor's limit")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailmux-backlog-") as workdir:
        drill = await run_drill(
            Path(workdir),
            backlog=args.backlog,
            per_second=args.per_second,
            latency_ms=args.latency_ms,
        )
    share = drill.drain_rate / drill.limit
    print(f"outage backlog: {drill.backlog} messages spooled in {drill.fill_seconds:.1f} s")
    print(
        f"  drained in {drill.drain_seconds:.1f} s: {drill.drain_rate:.0f} msg/s of "
        f"{drill.limit:.0f} configured = {share:.1%} (target >= 90 %)"
    )
    print(f"  first backlog delivery {drill.first_at - drill.healed_at:.2f} s after the heal")
    print(f"  per vendor {drill.per_vendor}, busiest second {drill.busiest_second}")
    print(
        f"  OTPs: {len(drill.otp_latencies)} sent at 10/s, states {dict(drill.otp_states)}, "
        f"p50 {drill.otp_percentile(50) * 1000:.0f} ms, "
        f"p99 {drill.otp_percentile(99) * 1000:.0f} ms (target p99 < 500 ms)"
    )
    print(f"  sent twice: {drill.duplicates}")


if __name__ == "__main__":
    asyncio.run(main())
