"""SparkPost: the whole wire contract of this ESP in one package.

`outbound` maps a Message to SparkPost's send request and its answer to an
outcome (the vendor), and passes a SparkPost-shaped request through. `inbound`
is SparkPost's Transmissions API as mailmux serves it: `transmission` and
`content` read the request into Messages, `replies` words the answers.
`emulated` serves the same contract as the emulator's SparkPost.
"""

from mailmux.vendors.sparkpost.outbound import SparkPostVendor

__all__ = ["SparkPostVendor"]
