"""An address from the wire is length-checked before it is parsed or cached (a 1 MB source_ip once cost
milliseconds per request and stayed in the cache)."""

from __future__ import annotations

from streams.policy import runtime


def test_an_oversized_address_is_malformed_and_not_cached() -> None:
    huge = "1" * 1_000_000
    inside, not_inside = runtime.cidr_checkers("10.0.0.0/8")
    assert not inside(huge) and not not_inside(huge)  # malformed: both CIDR tests are false (fail closed)
    assert huge not in runtime._IP_CACHE
    assert inside("10.1.2.3") and not inside("192.168.0.1")
