"""Amazon SES v2: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Amazon SES v2's send request and its answer to an
outcome (the vendor), and passes a caller's own SendEmail request through.
`inbound` serves SendEmail to boto3 clients pointed at mailmux (`sigv4` checks
their signatures, `sendemail` reads the body, `replies` words the answers);
`emulated` is the emulator's SES, on the same parsing.
"""

from mailmux.vendors.ses.outbound import QUOTA_RETRY_AFTER, SesVendor

__all__ = ["QUOTA_RETRY_AFTER", "SesVendor"]
