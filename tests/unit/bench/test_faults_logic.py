"""The pure parts of ``pdx bench faults``: takeover from timestamps, its percentiles, conflicts and duplicates among
all replies, a caller's timeouts, lost requests, audit consistency, group stability, the malformed requests and
their report (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams import config
from streams.bench.faults import (
    BAD_ROUTES,
    EXPECTED,
    ROUND_ROBIN,
    UNDECODABLE,
    audit_consistency,
    caller_outage,
    choose_victim,
    group_stable,
    lost_ids,
    malformed_category,
    malformed_report,
    malformed_value,
    partition_owners,
    reply_outcomes,
    scenario_names,
    takeover_by_partition,
    takeover_of,
    takeover_summary,
    timeliness,
    violations,
)
from streams.contracts import wire
from streams.errors import UserError
from streams.model import AccessRequest


def test_takeover_is_the_first_reply_to_a_request_sent_after_the_kill() -> None:
    answered = [
        (0, 9.0, 10.5),  # sent before the kill: its (redelivered) reply does not end the takeover
        (0, 10.2, 17.0),
        (0, 10.4, 16.0),  # sent later, answered first: the partition is served again at 16.0
        (1, 10.1, 12.25),
        (2, 10.1, 10.2),  # not one of the victim's partitions
    ]
    per = takeover_by_partition(10.0, [0, 1], answered)
    assert per == {0: 6.0, 1: 2.25}
    assert takeover_of(per) == 6.0


def test_a_partition_never_answered_again_has_no_takeover() -> None:
    per = takeover_by_partition(10.0, [0, 3], [(0, 11.0, 12.0), (3, 9.0, 12.0)])
    assert per == {0: 2.0, 3: None}
    assert takeover_of(per) is None
    assert takeover_of({}) is None


def test_takeover_percentiles_are_nearest_rank_and_an_unmeasured_kill_ranks_last() -> None:
    assert takeover_summary([3.0, 1.0, 2.0, 5.0, 4.0]) == {"takeover_p50_s": 3.0, "takeover_p99_s": 5.0}
    assert takeover_summary([1.0, None, 2.0]) == {"takeover_p50_s": 2.0, "takeover_p99_s": None}
    assert takeover_summary([]) == {"takeover_p50_s": None, "takeover_p99_s": None}


def test_conflicts_and_duplicates_count_every_reply() -> None:
    out = reply_outcomes({"a": ["allow"], "b": ["deny", "deny"], "c": ["allow", "deny"],
                          "d": ["step_up", "step_up", "deny"], "e": []})
    assert (out.duplicates, out.conflicting, out.conflicting_ids) == (1, 2, ["c", "d"])


def test_a_caller_times_out_when_the_first_reply_is_late_or_missing() -> None:
    got = timeliness([(0.0, 1.0), (0.0, 5.0), (0.0, 5.1), (1.0, None)], timeout_s=5.0)
    assert got == {"answered": 2, "pdp_timeouts": 2, "late_replies": 1, "never_answered": 1}


def test_the_caller_outage_is_the_longest_gap_between_requests_answered_in_time() -> None:
    requests = [(0, 0.0, True), (0, 1.0, False), (0, 4.0, False), (0, 5.0, True), (0, 6.0, True),
                (1, 0.5, True), (1, 2.0, True)]
    assert caller_outage(requests) == 5.0
    assert caller_outage([(0, 1.0, True), (0, 2.0, False), (0, 9.5, False)]) == 8.5  # never answered again
    assert caller_outage([(2, 3.0, False)]) == 0.0
    assert caller_outage([]) == 0.0


def test_lost_are_accepted_ids_without_an_audit_row() -> None:
    assert lost_ids(["r3", "r1", "r2"], ["r2", "other"]) == ["r1", "r3"]
    assert lost_ids([], ["r1"]) == []


def test_audit_consistency() -> None:
    rows = [("a", "allow"), ("b", "allow"), ("b", "deny"), ("c", "deny")]
    got = audit_consistency({"a": "allow", "b": "deny", "c": "allow", "unaudited": "allow"}, rows)
    assert got == {"audit_conflicting": 1, "audit_disagrees": 1}  # b holds two decisions; c's is not what was told


def test_owners_come_from_recent_replies() -> None:
    replies = [(0, 1.0, "w1"), (0, 5.0, "w2"), (1, 5.5, "w1"), (0, 6.0, "w2")]
    assert partition_owners(replies, since=4.0) == {0: {"w2"}, 1: {"w1"}}


def test_a_group_is_stable_when_each_partition_has_one_live_owner_and_each_worker_owns_some() -> None:
    live = ["w1", "w2"]
    assert group_stable({0: {"w1"}, 1: {"w1"}, 2: {"w2"}, 3: {"w2"}}, live, 4)
    assert not group_stable({0: {"w1"}, 1: {"w1"}, 2: {"w1"}, 3: {"w1"}}, live, 4)  # w2 has nothing yet
    assert not group_stable({0: {"w1", "w2"}, 1: {"w1"}, 2: {"w2"}, 3: {"w2"}}, live, 4)  # moving
    assert not group_stable({0: {"w1"}, 1: {"w1"}, 2: {"w2"}}, live, 4)  # partition 3 unanswered
    assert not group_stable({0: {"w0"}, 1: {"w1"}, 2: {"w2"}, 3: {"w2"}}, live, 4)  # a dead worker's reply
    assert group_stable({0: {"w1"}}, live, 1)  # fewer partitions than workers


def test_the_victim_is_the_oldest_worker_that_owns_partitions() -> None:
    owners = {0: {"w2"}, 1: {"w3"}, 2: {"w2"}}
    assert choose_victim(owners, ["w1", "w2", "w3"]) == ("w2", [0, 2])
    assert choose_victim({}, ["w1", "w2"]) == ("w1", [])


def test_the_malformed_schedule_interleaves_every_category() -> None:
    counts: dict[str, int] = {}
    for i in range(20_000):
        c = malformed_category(i)
        counts[c] = counts.get(c, 0) + 1
    assert counts["oversized_600k"] == 5 and counts["oversized_64k"] == 195
    assert set(counts) == {*ROUND_ROBIN, "oversized_64k", "oversized_600k"} == set(EXPECTED)
    assert min(counts[c] for c in ROUND_ROBIN) > 1000


def _request() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"request_id": "faults-x-malformed-m1", "occurred_at": now, "identity_id": "agent-config-bot",
            "on_behalf_of": [], "action": "config:read",
            "resource": {"id": "feature-flags", "type": "config", "environment": None, "sensitivity": None,
                         "repository": None, "owner": None, "attributes": {}},
            "context": {"source_ip": None, "token_issued_at": None, "requested_ttl_s": None, "approval_id": None,
                        "change_ticket": None, "tool": None, "attributes": {}},
            "reply_to": config.TOPIC_DECISIONS, "reply_partition": 0, "deadline": now + timedelta(seconds=5)}


@pytest.mark.parametrize("category", UNDECODABLE)
def test_undecodable_requests_do_not_decode(category: str) -> None:
    for salt in range(20):
        with pytest.raises(wire.WireError):
            wire.decode_as("AccessRequest", malformed_value(category, _request(), salt))


@pytest.mark.parametrize("category", BAD_ROUTES)
def test_bad_routes_decode_with_the_bad_route(category: str) -> None:
    decoded = wire.decode_as("AccessRequest", malformed_value(category, _request()))
    route = (decoded["reply_to"], decoded["reply_partition"])
    assert route != (config.TOPIC_DECISIONS, 0)
    assert AccessRequest.from_avro(decoded).request_id == "faults-x-malformed-m1"  # only the route is wrong
    if category == "reply_to_protected":
        assert route[0] == config.TOPIC_POLICIES
    if category == "reply_partition_99":
        assert route == (config.TOPIC_DECISIONS, 99)


def test_an_invalid_field_decodes_but_is_not_a_valid_request() -> None:
    decoded = wire.decode_as("AccessRequest", malformed_value("invalid_sensitivity", _request()))
    with pytest.raises(ValueError, match="sensitivity"):
        AccessRequest.from_avro(decoded)


@pytest.mark.parametrize(("category", "low", "high"), [("oversized_64k", 64_000, 80_000),
                                                        ("oversized_600k", 600_000, 700_000)])
def test_oversized_requests_are_valid_and_big(category: str, low: int, high: int) -> None:
    value = malformed_value(category, _request())
    assert low < len(value) < high < 1_000_000  # below Kafka's default 1 MiB message limit
    AccessRequest.from_avro(wire.decode_as("AccessRequest", value))


def test_an_unknown_category_is_refused() -> None:
    with pytest.raises(ValueError):
        malformed_value("nonsense", _request())


def test_the_malformed_report_checks_each_expectation() -> None:
    rows = [("reply_to_protected", False, [], True), ("reply_to_protected", False, [], True),
            ("garbage_bytes", False, [], False),
            ("invalid_sensitivity", True, ["invalid_request"], True),
            ("reply_partition_99", True, ["no_matching_rule"], True),  # answered where nothing may be
            ("oversized_600k", False, [], False)]
    report = malformed_report(rows)
    protected = report["reply_to_protected"]
    assert (protected["sent"], protected["replied"], protected["audited"], protected["ok"]) == (2, 0, 2, True)
    assert report["garbage_bytes"]["ok"] is True and report["invalid_sensitivity"]["ok"] is True
    assert report["reply_partition_99"]["ok"] is False
    assert report["oversized_600k"]["ok"] is None  # nothing promised
    assert list(report) == sorted(report)
    wrong_reason = malformed_report([("invalid_sensitivity", True, ["no_matching_rule"], True)])
    assert wrong_reason["invalid_sensitivity"]["ok"] is False


def test_violations_name_every_nonzero_must_be_zero_count() -> None:
    scenarios = [
        {"name": "worker_kill", "lost": 0, "conflicting": 3, "misrouted": 0},
        {"name": "malformed", "lost": 2, "conflicting": 0, "protected_topic_writes": 0,
         "malformed": malformed_report([("reply_partition_99", True, [], True)])},
        {"name": "broker_restart", "error": "the stack did not answer"},
    ]
    got = violations(scenarios)
    assert got[0] == "worker_kill: conflicting = 3" and got[1] == "malformed: lost = 2"
    assert got[2].startswith("malformed: reply_partition_99: expected")
    assert got[3].startswith("broker_restart: did not complete")
    assert violations([{"name": "sink_kill", "lost": 0, "conflicting": 0, "misrouted": 0}]) == []


def test_scenario_names_keep_the_documented_order() -> None:
    assert scenario_names(None)[0] == "worker_kill" and len(scenario_names(None)) == 5
    assert scenario_names(["malformed", "worker_kill"]) == ["worker_kill", "malformed"]
    with pytest.raises(UserError):
        scenario_names(["worker_kil"])
