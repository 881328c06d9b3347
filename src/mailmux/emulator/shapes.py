"""The ESP shapes the emulator can serve: one entry per shape module.

Entries name their module and class and are imported on first use, so that
starting one emulator does not import every ESP's shape.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import cast

from mailmux.emulator.base import ShapeFactory

_SHAPE_CLASSES = {
    "sendgrid": "mailmux.vendors.sendgrid.emulated:SendGridShape",
    "mailgun": "mailmux.vendors.mailgun.emulated:MailgunShape",
    "postmark": "mailmux.vendors.postmark.emulated:PostmarkShape",
    "sparkpost": "mailmux.vendors.sparkpost.emulated:SparkPostShape",
    "ses": "mailmux.vendors.ses.emulated:SesShape",
    "resend": "mailmux.vendors.resend.emulated:ResendShape",
    "mailjet": "mailmux.vendors.mailjet.emulated:MailjetEmulated",
    "brevo": "mailmux.vendors.brevo.emulated:BrevoShape",
}


class _LazyShapes(Mapping[str, ShapeFactory]):
    def __getitem__(self, name: str) -> ShapeFactory:
        module_name, _, class_name = _SHAPE_CLASSES[name].partition(":")
        module = importlib.import_module(module_name)
        return cast(ShapeFactory, getattr(module, class_name))

    def __iter__(self) -> Iterator[str]:
        return iter(_SHAPE_CLASSES)

    def __len__(self) -> int:
        return len(_SHAPE_CLASSES)


SHAPES: Mapping[str, ShapeFactory] = _LazyShapes()
