"""The dead-letter contract: pdx.dlq records keep the original bytes, and these headers say why and whence."""

from __future__ import annotations

#: Longest error text put in a header: messages quote a short prefix of a bad value, never all of it.
MAX_ERROR_CHARS = 1000


def dead_letter_headers(
    error: str, topic: str, partition: int, offset: int, worker_id: str
) -> list[tuple[str, bytes]]:
    """The headers of a pdx.dlq record (docs/contracts.md): what went wrong and where the bytes came from."""
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + f"... ({len(error)} chars)"
    return [
        ("error", error.encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        ("worker_id", worker_id.encode()),
    ]
