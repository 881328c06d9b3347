"""The outage backlog (issue 10): 20,000 spooled messages drain at the vendors' limits,
while OTP codes sent meanwhile are answered fast and none expires; nothing is sent twice.

See `backlog_kit.run_drill` for the set-up: two vendors at 200 msg/s each,
answering after 100 ms, OTPs at 10/s while the spool drains.
"""

from __future__ import annotations

from pathlib import Path

from backlog_kit import run_drill

BACKLOG = 20_000
PER_SECOND = 200.0  # each of the two vendors


async def test_the_outage_backlog_drains_at_the_limits_while_otps_keep_flowing(
    tmp_path: Path,
) -> None:
    drill = await run_drill(tmp_path, backlog=BACKLOG, per_second=PER_SECOND)

    assert drill.fill_failures == []
    assert [line for line in drill.log if " ERROR " in line] == []
    missing = [n for n in range(BACKLOG) if drill.delivered[f"backlog-{n}"] == 0]
    assert missing == []
    assert drill.duplicates == 0  # nothing sent twice, backlog or OTP
    assert drill.otp_failures == [] and len(drill.otp_latencies) >= 100
    assert set(drill.otp_states) == {"sent"}  # none queued, none expired
    assert drill.otp_percentile(99) < 0.5, sorted(drill.otp_latencies)[-10:]
    assert drill.drain_rate >= 0.9 * drill.limit, (drill.drain_rate, drill.drain_seconds)
    burst = round(PER_SECOND / 10)
    for vendor, busiest in drill.busiest_second.items():
        assert busiest <= PER_SECOND + burst, (vendor, busiest)  # the limit was kept
