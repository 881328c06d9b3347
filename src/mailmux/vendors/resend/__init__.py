"""Resend: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Resend's send request and its answer to an
outcome (the vendor).
"""

from mailmux.vendors.resend.outbound import ResendVendor

__all__ = ["ResendVendor"]
