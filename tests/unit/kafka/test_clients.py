"""The one Kafka client factory applies bootstrap and security to every client it builds."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from streams import config
from streams.kafka import clients


def secure_cfg(tmp_path: Path) -> config.Settings:
    return config.Settings.from_env(
        {
            config.ENV_KAFKA_BOOTSTRAP: "broker-1:9093,broker-2:9093",
            config.ENV_KAFKA_SECURITY_PROTOCOL: "SASL_SSL",
            config.ENV_KAFKA_SASL_USERNAME: "pdx-worker",
            config.ENV_KAFKA_SASL_PASSWORD: "s3cret",
        }
    )


def test_plaintext_by_default() -> None:
    options = clients.connection_options(config.Settings.from_env({config.ENV_KAFKA_PORT: "19092"}))
    assert options == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "PLAINTEXT"}


async def test_sasl_ssl_reaches_every_client(tmp_path: Path) -> None:
    cfg = secure_cfg(tmp_path)
    options = clients.connection_options(cfg)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("SCRAM-SHA-512", "pdx-worker")
    assert options["ssl_context"] is not None
    producer = clients.producer(cfg)
    consumer = clients.consumer(cfg, "pdx.requests", group_id="g")
    admin = clients.admin(cfg)
    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "pdx-worker"


async def test_producers_are_idempotent_with_acks_all_unless_told_otherwise() -> None:
    cfg = config.Settings.from_env({})
    reliable = clients.producer(cfg)
    assert reliable._txn_manager is not None  # aiokafka keeps a transaction manager only when idempotent
    assert reliable._sender._acks == -1  # acks=all
    fast = clients.producer(cfg, acks=1, enable_idempotence=False)
    assert fast._txn_manager is None and fast._sender._acks == 1


def test_faust_gets_the_same_broker_and_credentials(tmp_path: Path) -> None:
    options = clients.faust_broker_options(secure_cfg(tmp_path))
    assert options["broker"] == "kafka://broker-1:9093;kafka://broker-2:9093"
    creds = options["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.mechanism.value, creds.protocol.value) == ("pdx-worker", "SCRAM-SHA-512", "SASL_SSL")


def test_the_password_is_not_in_the_settings_repr(tmp_path: Path) -> None:
    assert "s3cret" not in repr(secure_cfg(tmp_path))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({config.ENV_KAFKA_SECURITY_PROTOCOL: "SASL_SSL"}, "needs PDX_KAFKA_SASL_USERNAME"),
        ({config.ENV_KAFKA_SECURITY_PROTOCOL: "TLS"}, "is not one of PLAINTEXT, SSL"),
        ({config.ENV_KAFKA_SSL_CAFILE: "/nonexistent/ca.pem"}, "no such file"),
    ],
)
def test_bad_security_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.Settings.from_env(env)
