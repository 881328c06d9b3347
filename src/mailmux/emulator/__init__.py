"""Local ESP emulators: serve an ESP's send API, store what it accepts, inject faults.

`Emulator("sendgrid", port=0)` in tests; `run_emulator(...)` behind
`mailmux emulate --shape sendgrid --port 9001`. Shapes are listed in `SHAPES`;
`SmtpEmulator` (`--shape smtp`) is an SMTP relay with the same faults.
"""

from mailmux.emulator.base import Received, Shape, ShapeFactory
from mailmux.emulator.control import MAX_MESSAGES, StoredMessage
from mailmux.emulator.faults import FaultError, Faults
from mailmux.emulator.server import Emulator, run_emulator
from mailmux.emulator.shapes import SHAPES
from mailmux.emulator.smtp import SmtpEmulator

__all__ = [
    "MAX_MESSAGES",
    "SHAPES",
    "Emulator",
    "FaultError",
    "Faults",
    "Received",
    "Shape",
    "ShapeFactory",
    "SmtpEmulator",
    "StoredMessage",
    "run_emulator",
]
