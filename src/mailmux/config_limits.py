"""`vendors.<name>.rate_limit` and `vendors.<name>.warmup`: how much one vendor may take.

A rate limit is the ESP's own word (its messages per second, its daily
quota): mailmux stays under it rather than collecting 429s. A warm-up
schedule is the operator's: a new vendor's IP reputation is built with a
slowly rising daily volume, and an established vendor is kept warm with a
minimum share of each day's mail. The limiter (`mailmux.limiter`) and the
warm-up arithmetic (`mailmux.warmup`) read these models; this module only
says what a valid setting is, with every error at its path.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from mailmux.config_sources import Violations
from mailmux.config_values import Count, CountOrZero, finite_number, whole_number

#: The growth ramp's length when `days` is not given.
DEFAULT_RAMP_DAYS = 30
#: The longest growth ramp: the caps are computed ahead, one per day.
MAX_RAMP_DAYS = 3650
_RampDays = Annotated[int, BeforeValidator(whole_number), Field(ge=1, le=MAX_RAMP_DAYS)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RateLimit(_Section):
    """What the ESP allows this account: messages per second (with a burst) and per day.

    `per_day` counts per UTC day, as ESPs count their daily quotas. A vendor
    at its limit is skipped (not failed, not counted against its health).
    """

    per_second: Annotated[float, BeforeValidator(finite_number), Field(gt=0)] | None = None
    # Messages that may go at once after a quiet spell. Default: max(1, per_second).
    burst: Count | None = None
    per_day: Count | None = None

    @model_validator(mode="after")
    def _something_limited(self) -> RateLimit:
        if self.per_second is None and self.per_day is None:
            raise ValueError("needs per_second, per_day or both")
        if self.burst is not None and self.per_second is None:
            raise Violations(("burst", "needs per_second (a burst of what rate?)"))
        return self

    @property
    def bucket_size(self) -> float:
        """The token bucket's capacity: `burst`, by default max(1, per_second)."""
        if self.burst is not None:
            return float(self.burst)
        return max(1.0, self.per_second or 1.0)


class WarmupConfig(_Section):
    """A ramp of daily caps from `start`, a minimum daily share, or both.

    The ramp is either `daily_caps` (day 1, day 2, ...) or `start_cap` growing
    by `growth` a day for `days` days; after the ramp the vendor has no cap.
    `min_share` alone keeps an established vendor warm: below that share of
    the day's messages it gets the weight that brings it there.
    """

    start: dt.date | None = None  # day 1 of the ramp (UTC); before it the cap is 0
    daily_caps: Annotated[tuple[CountOrZero, ...], Field(min_length=1)] | None = None
    start_cap: Count | None = None
    growth: Annotated[float, BeforeValidator(finite_number), Field(gt=1)] | None = None
    days: _RampDays | None = None  # the growth ramp's length; default DEFAULT_RAMP_DAYS
    min_share: Annotated[float, BeforeValidator(finite_number), Field(gt=0, lt=1)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> WarmupConfig:
        problems: list[tuple[str, str]] = []
        growth_form = [n for n in ("start_cap", "growth", "days") if getattr(self, n) is not None]
        ramp = self.daily_caps is not None or bool(growth_form)
        if self.daily_caps is not None:
            problems += [(n, "not with daily_caps: one ramp form only") for n in growth_form]
        elif growth_form:
            for needed in ("start_cap", "growth"):
                if getattr(self, needed) is None:
                    problems.append((needed, "required with " + " and ".join(growth_form)))
        if ramp and self.start is None:
            problems.append(("start", "required with a ramp (the date of its day 1)"))
        if not ramp:
            if self.start is not None:
                problems.append(("start", "needs a ramp: daily_caps, or start_cap and growth"))
            elif self.min_share is None:
                raise ValueError(
                    "needs a ramp (start and daily_caps, or start, start_cap and growth), "
                    "min_share, or both"
                )
        if not problems and self.start_cap is not None and self.growth is not None:
            try:
                self.start_cap * self.growth ** (self.ramp_days - 1)
            except OverflowError:
                problems.append(
                    ("growth", f"the ramp's last cap is too large to count (got {self.growth:g})")
                )
        if problems:
            raise Violations(*problems)
        return self

    @property
    def ramp_days(self) -> int:
        """How many days the ramp lasts (0: no ramp, min_share only)."""
        if self.daily_caps is not None:
            return len(self.daily_caps)
        if self.start_cap is not None:
            return DEFAULT_RAMP_DAYS if self.days is None else self.days
        return 0
