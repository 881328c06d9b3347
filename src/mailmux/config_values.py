"""Value rules that more than one configuration section needs.

They live apart from `mailmux.config` so that a section kept in a module of
its own (`mailmux.config_smtp`) can use them without importing the whole
configuration, which in turn imports that section.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import BeforeValidator, Field

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
