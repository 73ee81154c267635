"""Session fixtures: the real services integration tests run against.

`PDX_TEST_SERVICES=local` (default, what CI runs): `pdx dev` starts a real Kafka (KRaft) and a real
ClickHouse server (chdb engine) on free ports in a temporary state dir, once per test run, started only when
a test asks for them. `PDX_TEST_SERVICES=containers`: testcontainers' Kafka and ClickHouse images (needs
Docker). Either way the fixtures export PDX_KAFKA_BOOTSTRAP / PDX_CLICKHOUSE_URL so code under test that
reads streams.config finds the services.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams import config as settings


@dataclass
class Services:
    kafka_bootstrap: str
    clickhouse_url: str
    mode: str
    stack: object | None = None  # streams.devservices.services.DevStack in local mode
    #: private key of the test run's trusted workload-token issuer (TEST_ISSUER), or None
    token_issuer_key: object | None = None


#: The workload-token issuer and audience the test run's workers trust (PDX_JWKS_FILE, see _trusted_issuer).
TEST_ISSUER = "https://issuer.pdx.test"
TEST_AUDIENCE = "pdx"


def _trusted_issuer(tmp: Path) -> tuple[object, dict[str, str]]:
    """A fresh ES256 issuer key and the PDX_JWKS_FILE that makes the workers trust it."""
    import json

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**json.loads(jwt.get_algorithm_by_name("ES256").to_jwk(key.public_key())), "kid": "test-1", "alg": "ES256"}
    path = tmp / "jwks.json"
    path.write_text(json.dumps({"issuers": [{"issuer": TEST_ISSUER, "audiences": [TEST_AUDIENCE],
                                             "algorithms": ["ES256"], "jwks": {"keys": [jwk]}}]}))
    return key, {settings.ENV_JWKS_FILE: str(path)}


def _trust_dev_issuer_too(jwks_file: Path) -> None:
    """The demo (run by a test) mints tokens with the dev issuer of the keys dir: trust it beside the test one."""
    import json

    from streams.devservices.issuer import ensure_dev_issuer

    dev = json.loads(ensure_dev_issuer(settings.load()).read_text())
    merged = json.loads(jwks_file.read_text())
    merged["issuers"] += dev["issuers"]
    jwks_file.write_text(json.dumps(merged))


def _local(tmp: Path) -> Iterator[Services]:
    from streams.contracts.signing import ensure_dev_keys
    from streams.devservices.services import DevStack, Ports

    stack = DevStack(tmp / "state", settings.load())
    ports = Ports.free()
    # state records are signed: this run's keys, trusted by the workers the tests start (they inherit the env)
    issuer_key, jwks = _trusted_issuer(tmp)
    keys = {settings.ENV_KEYS_DIR: str(tmp / "keys"), **jwks}
    # the dev ClickHouse has a login per role: stack.env() points pdx at this stack's credentials file
    saved = {k: os.environ.get(k) for k in {**ports.env(), **keys, settings.ENV_CLICKHOUSE_CREDENTIALS: ""}}
    try:
        stack.up(("kafka", "clickhouse"), ports)
        os.environ.update(stack.env(ports))
        os.environ.update(keys)
        ensure_dev_keys(settings.load())
        _trust_dev_issuer_too(Path(jwks[settings.ENV_JWKS_FILE]))
        yield Services(f"127.0.0.1:{ports.kafka}", f"http://127.0.0.1:{ports.clickhouse_http}", "local", stack,
                       issuer_key)
    finally:
        stack.down(("kafka", "clickhouse"))
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _containers() -> Iterator[Services]:  # pragma: no cover - needs a Docker engine
    from testcontainers.clickhouse import ClickHouseContainer  # type: ignore[import-untyped]
    from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

    with (
        KafkaContainer(settings.KAFKA_IMAGE).with_kraft() as kafka,
        ClickHouseContainer(settings.CLICKHOUSE_IMAGE) as ch,
    ):
        bootstrap = kafka.get_bootstrap_server()
        url = f"http://{ch.get_container_host_ip()}:{ch.get_exposed_port(8123)}"
        os.environ[settings.ENV_KAFKA_BOOTSTRAP] = bootstrap
        os.environ[settings.ENV_CLICKHOUSE_URL] = url
        yield Services(bootstrap, url, "containers")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    mode = os.environ.get(settings.ENV_TEST_SERVICES, "local")
    if mode == "local":
        yield from _local(tmp_path_factory.mktemp("pdx-services"))
    elif mode == "containers":
        yield from _containers()
    else:
        raise pytest.UsageError(f"{settings.ENV_TEST_SERVICES}={mode!r}: use 'local' (default) or 'containers'")


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def clickhouse_url(services: Services) -> str:
    return services.clickhouse_url
