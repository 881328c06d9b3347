"""What a reload would change, decided from two validated configs (pure)."""

from __future__ import annotations

from typing import Any

from mailmux.config import Config
from mailmux.config_diff import diff


def config(**sections: Any) -> Config:
    base: dict[str, Any] = {
        "node_id": "n",
        "vendors": {
            "a": {"kind": "sandbox", "weight": 50},
            "b": {"kind": "postmark", "api_key": "pm-1", "weight": 50},
        },
    }
    return Config.model_validate({**base, **sections})


def test_the_same_file_changes_nothing() -> None:
    change = diff(config(), config())
    assert change.empty and change.restart_needed == ()
    assert change.summary() == "nothing that applies live changed"


def test_vendors_added_removed_replaced_and_retuned_are_told_apart() -> None:
    new = config(
        vendors={
            "b": {"kind": "postmark", "api_key": "pm-2", "weight": 50},  # new key: replaced
            "c": {"kind": "sandbox", "weight": 10},
        }
    )
    change = diff(config(), new)
    assert (change.added, change.removed, change.replaced, change.retuned) == (
        ("c",),
        ("a",),
        ("b",),
        (),
    )
    assert change.summary() == "added c; removed a; replaced b"


def test_weight_fallback_and_attempt_timeout_keep_the_vendor() -> None:
    new = config(
        vendors={
            "a": {"kind": "sandbox", "weight": 0, "fallback": False},
            "b": {"kind": "postmark", "api_key": "pm-1", "weight": 50, "attempt_timeout": 3},
        }
    )
    change = diff(config(), new)
    assert change.retuned == ("a", "b") and change.replaced == ()


def test_settings_bound_at_start_need_a_restart_and_the_rest_applies_live() -> None:
    new = config(
        listen="127.0.0.1:9999",
        smtp={"listen": "127.0.0.1:2525"},
        retry={"lease_seconds": 90, "base_delay": 2},
        health={"consecutive_failures": 9},
    )
    change = diff(config(), new)
    assert change.restart_needed == ("listen", "smtp", "retry.lease_seconds")
    assert change.other  # health and retry.base_delay apply live
    assert "needs a restart to apply: listen, smtp, retry.lease_seconds" in change.summary()


def test_the_retriers_slots_need_a_restart() -> None:
    new = config(retry={"concurrency": 200, "reserved": 20})

    change = diff(config(), new)

    assert change.restart_needed == ("retry.concurrency", "retry.reserved")
    assert not change.other


def test_keys_are_a_live_change() -> None:
    assert diff(config(), config(api_keys=["k-0123456789"])).other
    assert diff(config(), config(admin_keys=["k-0123456789"])).other
