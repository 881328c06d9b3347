"""Rate limits and warm-up schedules in the config: valid forms, errors at their paths."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailmux.config import ConfigError, load_config
from mailmux.config_diff import diff
from mailmux.config_limits import RateLimit, WarmupConfig

EXAMPLE = Path(__file__).resolve().parent.parent / "mailmux.example.yaml"


def vendors(**extra: dict[str, Any]) -> dict[str, Any]:
    """Two sandbox vendors, `a` with the settings in `extra`."""
    return {
        "listen": "127.0.0.1:0",
        "vendors": {
            "a": {"kind": "sandbox", "weight": 50, **extra},
            "b": {"kind": "sandbox", "weight": 50},
        },
    }


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "mailmux.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path, env={})


def errors(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, data)
    return caught.value.errors


def test_rate_limit_forms_and_the_default_burst(tmp_path: Path) -> None:
    config = load(tmp_path, vendors(rate_limit={"per_second": 200, "per_day": 50000}))
    limit = config.vendors["a"].rate_limit
    assert (limit.per_second, limit.burst, limit.per_day) == (200.0, None, 50000)
    assert limit.bucket_size == 200.0
    assert RateLimit(per_second=0.5).bucket_size == 1.0  # at least one message at once
    assert RateLimit(per_second=10, burst=3).bucket_size == 3.0
    assert RateLimit(per_day=10).per_second is None
    assert config.vendors["b"].rate_limit is None


def test_both_ramp_forms_and_min_share_alone(tmp_path: Path) -> None:
    caps = load(tmp_path, vendors(warmup={"start": "2024-05-01", "daily_caps": [50, 100]}))
    warmup = caps.vendors["a"].warmup
    assert (warmup.start, warmup.daily_caps, warmup.ramp_days) == (
        dt.date(2024, 5, 1),
        (50, 100),
        2,
    )
    grown = WarmupConfig(start=dt.date(2024, 5, 1), start_cap=50, growth=1.5)
    assert (grown.days, grown.ramp_days) == (None, 30)  # days defaults to 30
    kept_warm = WarmupConfig(min_share=0.05)
    assert (kept_warm.start, kept_warm.ramp_days) == (None, 0)


@pytest.mark.parametrize(
    ("section", "value", "expected"),
    [
        ("rate_limit", {}, "vendors.a.rate_limit: needs per_second, per_day or both"),
        ("rate_limit", {"burst": 5, "per_day": 9}, "vendors.a.rate_limit.burst: needs per_second"),
        ("rate_limit", {"per_second": 0}, "vendors.a.rate_limit.per_second: "),
        (
            "rate_limit",
            {"per_second": float("inf")},
            "vendors.a.rate_limit.per_second: must be a finite",
        ),
        ("rate_limit", {"per_day": True}, "vendors.a.rate_limit.per_day: must be a whole number"),
        ("rate_limit", {"per_second": 5, "per_minute": 9}, "vendors.a.rate_limit.per_minute: "),
        ("warmup", {}, "vendors.a.warmup: needs a ramp (start and daily_caps"),
        ("warmup", {"daily_caps": [1]}, "vendors.a.warmup.start: required with a ramp"),
        (
            "warmup",
            {"start": "2024-05-01", "daily_caps": [1], "growth": 2},
            "vendors.a.warmup.growth: not with daily_caps",
        ),
        (
            "warmup",
            {"start": "2024-05-01", "start_cap": 10},
            "vendors.a.warmup.growth: required with start_cap",
        ),
        (
            "warmup",
            {"start": "2024-05-01", "growth": 2, "days": 5},
            "vendors.a.warmup.start_cap: required with growth and days",
        ),
        (
            "warmup",
            {"start": "2024-05-01", "start_cap": 10, "growth": 1},
            "vendors.a.warmup.growth: ",
        ),
        ("warmup", {"start": "2024-05-01", "daily_caps": []}, "vendors.a.warmup.daily_caps: "),
        (
            "warmup",
            {"start": "2024-05-01", "daily_caps": [10, -1]},
            "vendors.a.warmup.daily_caps[1]: must be ≥ 0",
        ),
        ("warmup", {"start": "2024-05-01"}, "vendors.a.warmup.start: needs a ramp"),
        (
            "warmup",
            {"start": "2024-05-01", "start_cap": 1, "growth": 1.01, "days": 3651},
            "vendors.a.warmup.days: must be ≤ 3650",
        ),
        ("warmup", {"start": "May 1st", "daily_caps": [1]}, "vendors.a.warmup.start: "),
        ("warmup", {"min_share": 1}, "vendors.a.warmup.min_share: "),
        (
            "warmup",
            {"start": "2024-05-01", "start_cap": 10, "growth": 1e20, "days": 30},
            "vendors.a.warmup.growth: the ramp's last cap is too large",
        ),
    ],
)
def test_each_broken_setting_is_reported_at_its_path(
    tmp_path: Path, section: str, value: dict[str, Any], expected: str
) -> None:
    found = errors(tmp_path, vendors(**{section: value}))
    assert any(line.startswith(expected) for line in found), found


def test_min_shares_must_leave_a_share_to_the_weights(tmp_path: Path) -> None:
    data = vendors(warmup={"min_share": 0.6})
    data["vendors"]["b"]["warmup"] = {"min_share": 0.4}
    assert errors(tmp_path, data) == [
        "vendors: the warm-up min_shares must sum below 1, leaving a share to the weights "
        "(got a 0.6, b 0.4)"
    ]


def test_a_min_share_on_a_vendor_that_is_never_used_is_refused(tmp_path: Path) -> None:
    data = vendors(weight=0, fallback=False, warmup={"min_share": 0.1})
    assert errors(tmp_path, data) == [
        "vendors.a.warmup.min_share: a vendor with weight 0 and fallback: false is never used"
    ]


def test_a_changed_limit_or_schedule_retunes_the_vendor_and_keeps_its_health(
    tmp_path: Path,
) -> None:
    old = load(tmp_path, vendors())
    new = load(
        tmp_path,
        vendors(rate_limit={"per_second": 5}, warmup={"start": "2024-05-01", "daily_caps": [9]}),
    )
    change = diff(old, new)
    assert (change.retuned, change.replaced) == (("a",), ())


def test_the_example_shows_every_rate_limit_and_warmup_setting() -> None:
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    shown: dict[str, set[str]] = {"rate_limit": set(), "warmup": set()}
    for vendor in example["vendors"].values():
        for section, names in shown.items():
            names.update(vendor.get(section, {}))
    assert shown == {
        "rate_limit": set(RateLimit.model_fields),
        "warmup": set(WarmupConfig.model_fields),
    }
