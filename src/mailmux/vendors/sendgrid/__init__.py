"""SendGrid: the whole wire contract of this ESP in one package.

`outbound` maps a Message to SendGrid's send request and its answer to an
outcome (the vendor). `inbound` serves SendGrid's own Mail Send to the
SDKs pointed at mailmux: `parsing` and `fields` read a request into
Messages, `replies` words results and refusals as SendGrid does.
`emulated` is the emulator's SendGrid, built on the same parsing and replies.
"""

from mailmux.vendors.sendgrid.outbound import SendGridVendor

__all__ = ["SendGridVendor"]
