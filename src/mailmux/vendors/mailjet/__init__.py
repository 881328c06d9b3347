"""Mailjet: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Mailjet's send request and its answer to an
outcome (the vendor).
"""

from mailmux.vendors.mailjet.outbound import MailjetVendor

__all__ = ["MailjetVendor"]
