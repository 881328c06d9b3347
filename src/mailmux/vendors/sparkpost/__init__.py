"""SparkPost: the whole wire contract of this ESP in one package.

`outbound` maps a Message to SparkPost's send request and its answer to an
outcome (the vendor).
"""

from mailmux.vendors.sparkpost.outbound import SparkPostVendor

__all__ = ["SparkPostVendor"]
