"""SendGrid: the whole wire contract of this ESP in one package.

`outbound` maps a Message to SendGrid's send request and its answer to an
outcome (the vendor).
"""

from mailmux.vendors.sendgrid.outbound import SendGridVendor

__all__ = ["SendGridVendor"]
