"""Amazon SES v2: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Amazon SES v2's send request and its answer to an
outcome (the vendor).
"""

from mailmux.vendors.ses.outbound import QUOTA_RETRY_AFTER, SesVendor

__all__ = ["QUOTA_RETRY_AFTER", "SesVendor"]
