"""The ESP shapes the emulator can serve: one entry per shape module."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from mailmux.emulator.base import ShapeFactory
from mailmux.emulator.sendgrid import SendGridShape

SHAPES: Mapping[str, ShapeFactory] = MappingProxyType(
    {
        "sendgrid": SendGridShape,
    }
)
