"""Errors a person can act on. The CLI prints them as one line (no traceback) and exits 2."""


class UserError(Exception):
    """Something the user can fix; the message says what was wrong and what to do."""
