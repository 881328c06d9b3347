"""Mailjet: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Mailjet's send request and its answer to an
outcome (the vendor); `inbound` serves Mailjet's send API to Mailjet's clients
(`request` and `fields` read the body, `replies` words the answers, `sdk_key` tells an
SDK-made Idempotency-Key apart); `emulated` is the emulator's Mailjet.
"""

from mailmux.vendors.mailjet.outbound import MailjetVendor

__all__ = ["MailjetVendor"]
