"""Errors a person can act on. The CLI prints them as one line (no traceback) and exits 2."""


class UserError(Exception):
    """Something the user can fix; the message says what was wrong and what to do."""


def kafka_unreachable(bootstrap: str, detail: str = "") -> UserError:
    """The one message for 'Kafka is not there', with what to do about it."""
    why = f" ({detail})" if detail else ""
    return UserError(
        f"cannot reach Kafka at {bootstrap}{why}: start it with `pdx dev up` or set PDX_KAFKA_BOOTSTRAP"
    )
