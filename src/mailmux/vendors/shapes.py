"""Every ESP whose send API mailmux serves: vendor kind → its inbound `Shape`.

Imported on first use, so a node with two shapes on does not import all eight.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import cast

from mailmux.vendors.inbound import Shape

_SHAPE_CLASSES: dict[str, str] = {
    "sendgrid": "mailmux.vendors.sendgrid.inbound:SendGridInbound",
    "mailgun": "mailmux.vendors.mailgun.inbound:MailgunInbound",
    "postmark": "mailmux.vendors.postmark.inbound:PostmarkInbound",
    "sparkpost": "mailmux.vendors.sparkpost.inbound:SparkPostInbound",
    "ses": "mailmux.vendors.ses.inbound:SesInbound",
    "resend": "mailmux.vendors.resend.inbound:ResendInbound",
    "mailjet": "mailmux.vendors.mailjet.inbound:MailjetInbound",
    "brevo": "mailmux.vendors.brevo.inbound:BrevoInbound",
}

#: Every shape name, in the order the docs list them.
SHAPE_NAMES = tuple(_SHAPE_CLASSES)


class _LazyShapes(Mapping[str, Shape]):
    def __init__(self) -> None:
        self._made: dict[str, Shape] = {}

    def __getitem__(self, name: str) -> Shape:
        shape = self._made.get(name)
        if shape is None:
            module_name, _, class_name = _SHAPE_CLASSES[name].partition(":")
            module = importlib.import_module(module_name)
            shape = self._made[name] = cast(Shape, getattr(module, class_name)())
        return shape

    def __iter__(self) -> Iterator[str]:
        return iter(_SHAPE_CLASSES)

    def __len__(self) -> int:
        return len(_SHAPE_CLASSES)


#: The shapes, made once each (they are stateless).
SHAPES: Mapping[str, Shape] = _LazyShapes()
