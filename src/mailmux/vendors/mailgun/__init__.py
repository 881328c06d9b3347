"""Mailgun: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Mailgun's send request and its answer to an
outcome (the vendor).
"""

from mailmux.vendors.mailgun.outbound import MailgunVendor, encode_multipart

__all__ = ["MailgunVendor", "encode_multipart"]
