"""Postmark: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Postmark's send request and its answer to an
outcome (the vendor).
"""

from mailmux.vendors.postmark.outbound import PostmarkVendor

__all__ = ["PostmarkVendor"]
