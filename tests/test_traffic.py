"""TrafficHistory on a fake clock: per-second counts, gaps, the ring's wrap-around, reloads."""

from __future__ import annotations

from mailmux.traffic import WINDOW, TrafficHistory


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sent(history: TrafficHistory, clock: Clock, at: float, vendor: str, n: int = 1) -> None:
    clock.now = at
    for _ in range(n):
        history.sent(vendor)


def test_counts_accepted_messages_per_completed_second() -> None:
    clock = Clock(0.0)
    history = TrafficHistory(["a", "b"], clock=clock, window=10)
    sent(history, clock, 1000.1, "a", 3)
    sent(history, clock, 1000.9, "b")
    sent(history, clock, 1001.5, "a")
    sent(history, clock, 1002.0, "b", 2)  # the current second: not in the series yet

    start, counts = history.series(1002.3)
    assert start == 992
    assert counts == {
        "a": [0] * 8 + [3, 1],
        "b": [0] * 8 + [1, 0],
    }
    start, counts = history.series(1003.0)
    assert (start, counts["b"][-1]) == (993, 2)


def test_since_asks_only_for_the_seconds_not_seen() -> None:
    clock = Clock(0.0)
    history = TrafficHistory(["a"], clock=clock, window=10)
    sent(history, clock, 500.5, "a", 2)
    sent(history, clock, 501.5, "a", 4)
    assert history.series(502.0, since=501) == (501, {"a": [4]})
    assert history.series(502.0, since=502) == (502, {"a": []})
    assert history.series(502.0, since=600) == (502, {"a": []})  # never past now
    assert history.series(502.0, since=0) == (492, {"a": [0] * 8 + [2, 4]})  # window bounds it


def test_a_gap_reads_as_zero_and_old_counts_fall_out_of_the_window() -> None:
    clock = Clock(0.0)
    history = TrafficHistory(["a"], clock=clock, window=10)
    sent(history, clock, 100.2, "a", 5)
    sent(history, clock, 104.2, "a", 1)
    _, counts = history.series(106.0)
    assert counts["a"] == [0, 0, 0, 0, 5, 0, 0, 0, 1, 0]
    _, counts = history.series(111.0)  # second 100 is now 11 seconds ago
    assert counts["a"] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    _, counts = history.series(200.0)
    assert counts["a"] == [0] * 10


def test_the_ring_wraps_a_slot_written_a_window_ago_is_reset() -> None:
    clock = Clock(0.0)
    history = TrafficHistory(["a"], clock=clock, window=10)
    sent(history, clock, 100.5, "a", 7)  # slot 0
    sent(history, clock, 110.5, "a", 2)  # slot 0 again, ten seconds later: starts over
    start, counts = history.series(111.0)
    assert start == 101
    assert counts["a"] == [0] * 9 + [2]
    # A slot written exactly a window before and never since reads as 0, not as its old count.
    sent(history, clock, 113.5, "a")
    _, counts = history.series(124.0)
    assert counts["a"] == [0] * 10


def test_reconcile_keeps_the_history_of_kept_vendors() -> None:
    clock = Clock(0.0)
    history = TrafficHistory(["a", "b"], clock=clock, window=WINDOW)
    sent(history, clock, 10.5, "a", 2)
    sent(history, clock, 10.5, "b", 3)
    history.reconcile(["b", "c"])
    assert history.vendors == ["b", "c"]
    sent(history, clock, 11.5, "a")  # removed: ignored, and no error on the hot path
    sent(history, clock, 11.5, "c", 4)
    _, counts = history.series(12.0)
    assert set(counts) == {"b", "c"}
    assert counts["b"][-2:] == [3, 0]
    assert counts["c"][-2:] == [0, 4]
    assert len(counts["b"]) == len(counts["c"]) == 12  # c is charted as far back as b


def test_nothing_before_the_history_started_is_charted() -> None:
    clock = Clock(1000.7)
    history = TrafficHistory(["a"], clock=clock, window=WINDOW)
    assert history.started == 1000
    assert history.series(1000.9) == (1000, {"a": []})
    sent(history, clock, 1001.5, "a", 2)
    assert history.series(1003.0) == (1000, {"a": [0, 2, 0]})
    _, counts = history.series(1000 + WINDOW + 5.0)
    assert len(counts["a"]) == WINDOW  # a whole window once it has run that long


def test_an_unknown_vendor_is_ignored() -> None:
    clock = Clock(5.0)
    history = TrafficHistory(["a"], clock=clock, window=10)
    history.sent("z")
    assert history.series(7.0) == (5, {"a": [0, 0]})
