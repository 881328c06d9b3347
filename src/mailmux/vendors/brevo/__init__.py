"""Brevo: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Brevo's send request and its answer to an
outcome (the vendor), and passes a Brevo-shaped request through unchanged;
`inbound` reads Brevo's send request into Messages and `replies` words
mailmux's answers as Brevo's; `emulated` serves the same contract in the
emulator.
"""

from mailmux.vendors.brevo.outbound import BrevoVendor

__all__ = ["BrevoVendor"]
