"""connguard: keep Redis from running out of connections."""

__version__ = "0.1.0"
