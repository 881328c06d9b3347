"""Brevo: the whole wire contract of this ESP in one package.

`outbound` maps a Message to Brevo's send request and its answer to an
outcome (the vendor).
"""

from mailmux.vendors.brevo.outbound import BrevoVendor

__all__ = ["BrevoVendor"]
