"""ThrottledLog: a few lines per interval, then one line with the count left out."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fakes import FakeClock

from mailmux.ingress.throttle import ThrottledLog


class Timers:
    """Records what the throttle schedules instead of running an event loop."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.calls.append((delay, callback))

    def run_all(self) -> None:
        calls, self.calls = self.calls, []
        for _, callback in calls:
            callback()


@pytest.fixture
def logger() -> logging.Logger:
    log = logging.getLogger("mailmux.test.throttle")
    log.setLevel(logging.DEBUG)
    return log


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mailmux.test.throttle"]


def test_lines_beyond_the_budget_are_counted_and_summarised_when_the_window_ends(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    clock, timers = FakeClock(100.0), Timers()
    throttle = ThrottledLog(logger, lines=3, interval=60.0, clock=clock, call_later=timers)

    with caplog.at_level(logging.DEBUG, logger.name):
        for n in range(1000):
            throttle.log(logging.WARNING, "bad request %d", n)
        assert messages(caplog) == ["bad request 0", "bad request 1", "bad request 2"]
        assert throttle.suppressed == 997
        assert [delay for delay, _ in timers.calls] == [60.0]  # one summary, scheduled once

        clock.advance(60.0)
        timers.run_all()

    assert messages(caplog)[3:] == ["lines like the above left out: 997 (at most 3 every 60 s)"]
    assert throttle.suppressed == 0


def test_a_new_window_lets_lines_through_again(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(0.0)
    throttle = ThrottledLog(logger, lines=1, interval=10.0, clock=clock)

    with caplog.at_level(logging.DEBUG, logger.name):
        throttle.log(logging.INFO, "a")
        throttle.log(logging.INFO, "b")  # left out
        clock.advance(10.0)
        throttle.log(logging.INFO, "c")  # reports b's window first

    assert messages(caplog) == [
        "a",
        "lines like the above left out: 1 (at most 1 every 10 s)",
        "c",
    ]


def test_a_level_that_is_off_uses_no_budget(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    logger.setLevel(logging.INFO)
    throttle = ThrottledLog(logger, lines=1, interval=10.0, clock=FakeClock(0.0))

    with caplog.at_level(logging.INFO, logger.name):
        for _ in range(5):
            throttle.log(logging.DEBUG, "noise")
        throttle.log(logging.WARNING, "signal")

    assert messages(caplog) == ["signal"]
    assert throttle.suppressed == 0


def test_flush_reports_what_was_left_out(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = ThrottledLog(logger, lines=1, interval=60.0, clock=FakeClock(0.0))

    with caplog.at_level(logging.DEBUG, logger.name):
        throttle.log(logging.INFO, "a")
        throttle.log(logging.INFO, "b")
        throttle.flush()
        throttle.flush()  # nothing more to say

    assert messages(caplog) == [
        "a",
        "lines like the above left out: 1 (at most 1 every 60 s)",
    ]


@pytest.mark.parametrize(("lines", "interval"), [(0, 1.0), (1, 0.0)])
def test_a_throttle_needs_room_and_time(
    logger: logging.Logger, lines: int, interval: float
) -> None:
    with pytest.raises(ValueError, match="lines >= 1 and interval > 0"):
        ThrottledLog(logger, lines=lines, interval=interval)
