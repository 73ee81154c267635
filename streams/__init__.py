"""pdx — policy-driven execution for non-human identities."""

__version__ = "0.1.0"
