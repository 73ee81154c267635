"""`pdx dev up --secure`: a real broker with SASL_SSL (SCRAM-SHA-512), the dev CA and an ACL per pdx principal.

The broker runs in its own state dir on free ports (started through the CLI, as an operator would), and every
client below comes from streams/kafka/clients.py with the login `pdx dev env --principal NAME` prints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shlex
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from streams import config as settings
from streams.config import KafkaSecurity, Settings
from streams.kafka import clients
from streams.kafka.topics import create_topics

pytestmark = pytest.mark.integration


def _pdx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli.main", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=240,
        check=False,
    )


def _parse_env(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


@dataclasses.dataclass
class SecureStack:
    state: Path
    admin_env: dict[str, str]

    def env(self, principal: str) -> dict[str, str]:
        out = _pdx("dev", "env", "--principal", principal, "--state-dir", str(self.state))
        assert out.returncode == 0, out.stderr
        return _parse_env(out.stdout)

    def settings(self, principal: str) -> Settings:
        """Settings as a process run with `eval $(pdx dev env --principal NAME)` would read them."""
        return Settings.from_env(self.env(principal))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    state = tmp_path_factory.mktemp("secure-kafka") / "state"
    up = _pdx("dev", "up", "kafka", "--secure", "--free-ports", "--print-env", "--state-dir", str(state))
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        stack = SecureStack(state, _parse_env(up.stdout))
        asyncio.run(create_topics(Settings.from_env(stack.admin_env), 2, 2))
        yield stack
    finally:
        down = _pdx("dev", "down", "--state-dir", str(state))
        assert down.returncode == 0, down.stderr


async def _produce(cfg: Settings, topic: str, value: bytes = b"probe") -> None:
    producer = clients.producer(cfg, request_timeout_ms=10000)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, value, key=b"k"), 30)
    finally:
        await producer.stop()


def test_print_env_gives_an_admin_login_and_secrets_are_private(secure: SecureStack) -> None:
    env = secure.admin_env
    assert env[settings.ENV_KAFKA_SECURITY_PROTOCOL] == "SASL_SSL"
    assert env[settings.ENV_KAFKA_SASL_MECHANISM] == "SCRAM-SHA-512"
    assert env[settings.ENV_KAFKA_SASL_USERNAME] == "pdx-admin"
    assert env[settings.ENV_KAFKA_SASL_PASSWORD]
    assert Path(env[settings.ENV_KAFKA_SSL_CAFILE]) == secure.state / "secure" / "ca.pem"
    for private in ("kafka-users.json", "ca.key", "broker.key"):
        mode = stat.S_IMODE((secure.state / "secure" / private).stat().st_mode)
        assert mode == 0o600, f"{private} is {oct(mode)}"
    assert json.loads((secure.state / "state.json").read_text())["secure"] is True
    status = _pdx("dev", "status", "kafka", "--json", "--state-dir", str(secure.state))
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)[0]["healthy"] is True
    service = secure.env("pdx-service")
    assert service[settings.ENV_KAFKA_SASL_USERNAME] == "pdx-service"
    assert service[settings.ENV_KAFKA_SASL_PASSWORD] != env[settings.ENV_KAFKA_SASL_PASSWORD]


def test_service_may_not_write_policies(secure: SecureStack) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_produce(secure.settings("pdx-service"), settings.TOPIC_POLICIES))


def test_service_writes_requests_and_policy_admin_writes_policies(secure: SecureStack) -> None:
    asyncio.run(_produce(secure.settings("pdx-service"), settings.TOPIC_REQUESTS))
    asyncio.run(_produce(secure.settings("pdx-policy"), settings.TOPIC_POLICIES))


def test_inventory_principal_may_not_write_policies(secure: SecureStack) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_produce(secure.settings("pdx-inventory"), settings.TOPIC_POLICIES))


def test_plaintext_client_is_refused(secure: SecureStack, caplog: pytest.LogCaptureFixture) -> None:
    cfg = secure.settings("pdx-service").replace(kafka_security=KafkaSecurity())
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        asyncio.run(_produce(cfg, settings.TOPIC_REQUESTS))


def test_wrong_password_is_refused(secure: SecureStack, caplog: pytest.LogCaptureFixture) -> None:
    cfg = secure.settings("pdx-service")
    wrong = cfg.replace(kafka_security=dataclasses.replace(cfg.kafka_security, sasl_password="not-the-password"))
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        asyncio.run(_produce(wrong, settings.TOPIC_REQUESTS))
    assert "SaslAuthenticationFailed" in caplog.text


def test_worker_consumes_requests_with_its_group_and_service_cannot(secure: SecureStack) -> None:
    marker = uuid.uuid4().hex.encode()
    asyncio.run(_produce(secure.settings("pdx-service"), settings.TOPIC_REQUESTS, marker))

    async def consume(cfg: Settings, group: str) -> bool:
        consumer = clients.consumer(cfg, settings.TOPIC_REQUESTS, group_id=group, auto_offset_reset="earliest")
        await consumer.start()
        try:
            for _ in range(20):
                batch = await consumer.getmany(timeout_ms=1000)
                if any(m.value == marker for msgs in batch.values() for m in msgs):
                    await consumer.commit()
                    return True
            return False
        finally:
            await consumer.stop()

    worker = secure.settings("pdx-worker")
    assert asyncio.run(consume(worker, worker.app_id)) is True
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(consume(secure.settings("pdx-service"), "pdx-service-probe"))
