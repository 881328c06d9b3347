"""mailmux: an email traffic router across several ESPs."""

__version__ = "0.1.0"
