"""Postmark: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Postmark's send request and its answer to an
outcome (the vendor); `inbound` reads Postmark's send requests into Messages
and `replies` words mailmux's results as Postmark's answers (the ingress and
the emulator both use them); `emulated` is the emulator's Postmark.
"""

from mailmux.vendors.postmark.outbound import PostmarkVendor

__all__ = ["PostmarkVendor"]
