"""Value rules that more than one configuration section needs.

They live apart from `mailmux.config` so that a section kept in a module of
its own (`mailmux.config_smtp`) can use them without importing the whole
configuration, which in turn imports that section.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from mailmux.config_sources import show_value


def whole_number(value: object) -> object:
    """YAML reads `yes`/`on` as true, which pydantic would take as the number 1."""
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number (got {show_value(value)})")
    return value


def null_words(value: object) -> object:
    """Let an environment override switch an optional value off."""
    if isinstance(value, str) and value.strip().lower() in ("", "null", "none", "off"):
        return None
    return value


Count = Annotated[int, BeforeValidator(whole_number), Field(ge=1)]
CountOrZero = Annotated[int, BeforeValidator(whole_number), Field(ge=0)]


def finite_number(value: object) -> object:
    """Refuse NaN and infinity up front: NaN fails every bound with a misleading message."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number (got {show_value(value)})")
    try:
        number = float(value) if isinstance(value, str | int | float) else None
    except (ValueError, OverflowError):
        return value  # pydantic says what is wrong with it
    if number is not None and not math.isfinite(number):
        raise ValueError(f"must be a finite number (got {show_value(value)})")
    return value


def one_of(choices: Iterable[str]) -> BeforeValidator:
    """A string setting with a fixed set of values, refused in the file's words."""
    allowed = tuple(choices)

    def check(value: object) -> object:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)} (got {show_value(value)})")
        return value

    return BeforeValidator(check)


def name_rule(pattern: str, what: str) -> Callable[[str], str]:
    """A check that a name (of a vendor, a class, a client) matches `pattern`."""
    compiled = re.compile(pattern)

    def check(name: str) -> str:
        if compiled.fullmatch(name) is None:
            raise ValueError(f"{what} must match {pattern} (got {name!r})")
        return name

    return check


def split_listen(value: str) -> tuple[str, int]:
    """'host:port' or '[v6 address]:port' → (host without brackets, port)."""
    usage = f"must be host:port, e.g. 127.0.0.1:8025 or [::1]:8025 (got {value!r})"
    if value.startswith("["):
        host, separator, port = value[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(usage) from None
    else:
        host, separator, port = value.rpartition(":")
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets, e.g. [::1]:8025 (got {value!r})")
    if not separator or not host or re.fullmatch(r"[0-9]{1,5}", port) is None:
        raise ValueError(usage)
    if int(port) > 65535:
        raise ValueError(f"port must be 0-65535 (got {value!r})")
    return host, int(port)


def checked_listen(value: object) -> object:
    """A `host:port` setting, checked before pydantic sees it (None passes)."""
    if value is not None:
        if not isinstance(value, str):
            raise ValueError(f"must be host:port (got {show_value(value)})")
        split_listen(value)
    return value


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address bound to `host`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Finite = BeforeValidator(finite_number)
Seconds = Annotated[float, Finite, Field(gt=0)]
Text = Annotated[str, Field(min_length=1)]
VendorName = Annotated[str, AfterValidator(name_rule(r"[a-z0-9_]+", "vendor names"))]
ClassName = Annotated[str, AfterValidator(name_rule(r"[a-z0-9_-]+", "traffic class names"))]
ClientName = Annotated[str, AfterValidator(name_rule(r"[A-Za-z0-9_.-]{1,128}", "client names"))]
AmbiguousPolicyName = Literal["resend", "assume_sent"]
