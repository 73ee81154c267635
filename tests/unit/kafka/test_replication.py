"""How `pdx topics create` replicates: from the broker count, or from PDX_KAFKA_REPLICATION_FACTOR /
PDX_KAFKA_MIN_INSYNC_REPLICAS, and a clear error for what the cluster cannot honour."""

from __future__ import annotations

import pytest

from streams import config
from streams.errors import ConfigError, UserError
from streams.kafka.topics import replication_for


def cfg(**env: str) -> config.Settings:
    return config.Settings.from_env(env)


@pytest.mark.parametrize(("brokers", "expected"), [(1, (1, 1)), (2, (1, 1)), (3, (3, 2)), (5, (3, 2))])
def test_defaults_follow_the_broker_count(brokers: int, expected: tuple[int, int]) -> None:
    assert replication_for(cfg(), brokers) == expected


def test_settings_win_over_the_defaults() -> None:
    s = cfg(PDX_KAFKA_REPLICATION_FACTOR="2")
    assert (s.kafka_replication_factor, s.kafka_min_insync_replicas) == (2, None)
    assert replication_for(s, 3) == (2, 1)  # fewer than 3 copies: min ISR 1 unless set
    assert replication_for(cfg(PDX_KAFKA_REPLICATION_FACTOR="3", PDX_KAFKA_MIN_INSYNC_REPLICAS="3"), 3) == (3, 3)
    assert replication_for(cfg(PDX_KAFKA_MIN_INSYNC_REPLICAS="1"), 3) == (3, 1)


def test_more_replicas_than_brokers_says_what_to_set() -> None:
    with pytest.raises(UserError, match=r"PDX_KAFKA_REPLICATION_FACTOR=3 .* has 1 broker\(s\): set "
                                        r"PDX_KAFKA_REPLICATION_FACTOR to at most 1.*--brokers 3"):
        replication_for(cfg(PDX_KAFKA_REPLICATION_FACTOR="3"), 1)
    with pytest.raises(UserError, match="at most 3, or add brokers"):
        replication_for(cfg(PDX_KAFKA_REPLICATION_FACTOR="4"), 3)


def test_min_isr_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(UserError, match=r"PDX_KAFKA_MIN_INSYNC_REPLICAS=2 is more than the replication factor 1"):
        replication_for(cfg(PDX_KAFKA_MIN_INSYNC_REPLICAS="2"), 1)


@pytest.mark.parametrize("raw", ["0", "-1", "three"])
def test_bad_values_name_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="PDX_KAFKA_REPLICATION_FACTOR"):
        cfg(PDX_KAFKA_REPLICATION_FACTOR=raw)
