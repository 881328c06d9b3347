"""Resend: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Resend's send request and its answer to an
outcome (the vendor). `inbound` reads Resend's send requests into Messages
and `replies` words mailmux's results as Resend's answers (the Resend shape
of the ingress); `emulated` serves the same shape as the emulator.
"""

from mailmux.vendors.resend.outbound import ResendVendor

__all__ = ["ResendVendor"]
