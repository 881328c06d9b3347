"""Mailgun: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Mailgun's send request and its answer to an
outcome (the vendor), and passes a Mailgun-shaped request through.
`inbound` serves Mailgun's send API (`form` reads the body, `fields` makes
the Message, `replies` words the answers); `emulated` is the emulator's
Mailgun, built on the same pieces.
"""

from mailmux.vendors.mailgun.outbound import MailgunVendor, encode_multipart

__all__ = ["MailgunVendor", "encode_multipart"]
