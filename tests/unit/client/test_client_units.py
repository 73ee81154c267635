"""Client-side pieces that need no services: partitioning, the fail-closed timeout decision, the exceptions
`enforce` raises, and `pdx approve --ttl` parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.cli.approve import parse_ttl
from streams.client import Denied, PolicyDenied, StepUpRequired, timeout_decision
from streams.errors import UserError
from streams.kafka.state import partition_for
from streams.model import Decision, Reason

KEYS = ["", "a", "agent-intern", "wf-release-legacy", "agent-config-bot/apr-0123456789ab", "ünïcødé-agent",
        "x" * 500, "sa-deploy-payments", *(f"agent-{i}" for i in range(200))]


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 8, 12, 16, 100, 1000])
def test_partition_for_agrees_with_the_default_partitioner(partitions: int) -> None:
    default = DefaultPartitioner()
    all_partitions = list(range(partitions))
    for key in KEYS:
        expected = default(key.encode("utf-8"), all_partitions, all_partitions)
        got = partition_for(key, partitions)
        assert got == expected, (key, partitions)
        assert 0 <= got < partitions


def test_partition_for_spreads_keys() -> None:
    used = {partition_for(f"agent-{i}", 8) for i in range(200)}
    assert used == set(range(8))


@pytest.mark.parametrize("key,expected", [
    # murmur2 values of Kafka's Java client (org.apache.kafka.common.utils.Utils.murmur2), modulo 1000
    ("", 681), ("a", 524), ("ab", 434), ("abc", 107), ("123456789", 566), ("\x00 ", 742),
])
def test_partition_for_matches_the_java_client(key: str, expected: int) -> None:
    assert partition_for(key, 1000) == expected


def test_timeout_decision_is_a_fail_closed_deny() -> None:
    before = datetime.now(UTC)
    d = timeout_decision("req-1", 2.5)
    assert isinstance(d, Decision)
    assert d.request_id == "req-1"
    assert d.decision == "deny"
    assert d.reason_codes == ["pdp_timeout"]
    assert "2.5s" in d.reasons[0].message
    assert d.obligations == {} and d.matched_rules == [] and d.monitor == []
    assert d.bundle_version == "" and d.worker_id == ""
    assert before <= d.evaluated_at <= datetime.now(UTC)
    assert d.evaluated_at.tzinfo is not None
    assert Decision.from_dict(d.to_dict()) == d


def _decision(outcome: str, *reasons: tuple[str, str]) -> Decision:
    return Decision(
        request_id="req-42", decision=outcome, reasons=[Reason(code=c, message=m) for c, m in reasons],
        matched_rules=[], obligations={}, monitor=[], bundle_version="v", evaluated_at=datetime.now(UTC),
    )


def test_denied_message_includes_every_reason_code() -> None:
    d = _decision("deny", ("agent_not_tagged_for_production", "needs the tag"), ("time_bound_required", "set ttl"))
    exc = Denied(d)
    assert isinstance(exc, PolicyDenied)
    text = str(exc)
    assert "deny" in text and "req-42" in text
    assert "agent_not_tagged_for_production: needs the tag" in text and "time_bound_required: set ttl" in text
    assert exc.decision is d and [r.code for r in exc.reasons] == ["agent_not_tagged_for_production",
                                                                     "time_bound_required"]


def test_step_up_required_message_includes_the_reason_code() -> None:
    exc = StepUpRequired(_decision("step_up", ("approval_required", "ask config-owners")))
    assert isinstance(exc, PolicyDenied) and not isinstance(exc, Denied)
    assert "step_up" in str(exc) and "approval_required: ask config-owners" in str(exc)


def test_policy_denied_without_reasons_says_so() -> None:
    assert "no reason given" in str(PolicyDenied(_decision("deny")))


def test_timeout_decision_as_exception_names_pdp_timeout() -> None:
    assert "pdp_timeout" in str(Denied(timeout_decision("r", 1)))


@pytest.mark.parametrize("text,expected", [
    ("30m", timedelta(minutes=30)),
    ("4h", timedelta(hours=4)),
    ("2d", timedelta(days=2)),
    ("90", timedelta(seconds=90)),
    ("45s", timedelta(seconds=45)),
    ("1.5h", timedelta(minutes=90)),
    ("1h30m", timedelta(minutes=90)),  # the policy language's duration syntax, one parser for both
])
def test_parse_ttl_accepts_durations(text: str, expected: timedelta) -> None:
    assert parse_ttl(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "5x", "m", "h4", "4hours", "5M", "nan"])
def test_parse_ttl_rejects_junk_with_a_user_error(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_ttl(text)
    assert repr(text) in str(err.value) and "30m" in str(err.value)


@pytest.mark.parametrize("text", ["inf", "1e10d"])
def test_parse_ttl_rejects_overflowing_durations_with_a_user_error(text: str) -> None:
    with pytest.raises(UserError):
        parse_ttl(text)


@pytest.mark.parametrize("text", ["-5m", "0", "0h"])
def test_parse_ttl_rejects_non_positive_durations(text: str) -> None:
    with pytest.raises(UserError):
        parse_ttl(text)
