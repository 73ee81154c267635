"""broker_leader_kill's pure parts: which broker dies, and when the scenario runs."""

from __future__ import annotations

import pytest

from streams.bench.faults import CLUSTER_SCENARIOS, SCENARIOS, leader_victim, scenario_names
from streams.errors import UserError


@pytest.mark.parametrize(("leaders", "victim"), [
    ({0: 2, 1: 3, 2: 1, 3: 2}, 2),  # most partitions
    ({0: 3, 1: 1, 2: 3, 3: 1}, 3),  # a tie: partition 0's leader
    ({0: 3, 1: 1, 2: 2, 3: 1, 4: 2}, 1),  # a tie without partition 0's leader: the lowest id
    ({0: 1}, 1),
])
def test_leader_victim(leaders: dict[int, int], victim: int) -> None:
    assert leader_victim(leaders) == victim


def test_cluster_scenarios_run_by_default_only_with_three_brokers() -> None:
    assert "broker_leader_kill" not in scenario_names(None)
    assert scenario_names(None, brokers=3) == list(SCENARIOS)
    assert scenario_names(["broker_leader_kill"], brokers=3) == list(CLUSTER_SCENARIOS)
    with pytest.raises(UserError, match="broker_leader_kill needs a 3-broker cluster: run with --brokers 3"):
        scenario_names(["broker_leader_kill"])
