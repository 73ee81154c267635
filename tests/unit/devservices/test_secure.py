"""`pdx dev up --secure` files and ACLs, the dev ClickHouse users, and how pdx finds each role's login."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from streams import config as settings
from streams.config import Settings
from streams.devservices import chusers, secure
from streams.devservices.services import DevStack, Ports, _kafka_properties
from streams.errors import UserError


def _rules_by(principal: str) -> set[tuple[str, str, str, str]]:
    return {(r.operation, r.resource_type, r.name, r.pattern) for r in secure.acl_rules() if r.principal == principal}


def test_only_the_policy_principal_writes_policies() -> None:
    writers = {
        r.principal for r in secure.acl_rules() if r.operation == "WRITE" and r.name == settings.TOPIC_POLICIES
    }
    assert writers == {"pdx-policy"}  # pdx-admin is a super user, outside the ACLs
    assert {r.principal for r in secure.acl_rules()} == set(secure.PRINCIPALS) - {secure.ADMIN}


def test_service_worker_and_sink_acls() -> None:
    service = _rules_by("pdx-service")
    assert ("WRITE", "TOPIC", settings.TOPIC_REQUESTS, "LITERAL") in service
    assert ("READ", "TOPIC", settings.TOPIC_DECISIONS, "LITERAL") in service
    assert ("READ", "TOPIC", "pdx.replies.", "PREFIXED") in service
    assert not any(op == "WRITE" and name != settings.TOPIC_REQUESTS for op, _t, name, _p in service)
    worker = _rules_by("pdx-worker")
    for topic in (settings.TOPIC_REQUESTS, settings.TOPIC_INVENTORY, settings.TOPIC_APPROVALS, settings.TOPIC_POLICIES):
        assert ("READ", "TOPIC", topic, "LITERAL") in worker
        assert ("WRITE", "TOPIC", topic, "LITERAL") not in worker
    for topic in (settings.TOPIC_DECISIONS, settings.TOPIC_AUDIT, settings.TOPIC_DLQ):
        assert ("WRITE", "TOPIC", topic, "LITERAL") in worker
    assert ("READ", "GROUP", settings.DEFAULT_APP_ID, "PREFIXED") in worker
    sink = _rules_by("pdx-sink")
    assert ("READ", "TOPIC", settings.TOPIC_AUDIT, "LITERAL") in sink
    assert ("WRITE", "TOPIC", settings.TOPIC_DLQ, "LITERAL") in sink
    assert not any(op == "WRITE" and name != settings.TOPIC_DLQ for op, _t, name, _p in sink)


def test_checkpoint_topic_is_granted_when_config_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "TOPIC_CHECKPOINTS", "pdx.audit.checkpoints", raising=False)
    assert ("WRITE", "TOPIC", "pdx.audit.checkpoints", "LITERAL") in _rules_by("pdx-worker")
    assert ("READ", "TOPIC", "pdx.audit.checkpoints", "LITERAL") in _rules_by("pdx-sink")
    monkeypatch.delattr(settings, "TOPIC_CHECKPOINTS")
    assert not any("checkpoints" in r.name for r in secure.acl_rules())


def test_certificates_passwords_and_broker_config(tmp_path: Path) -> None:
    files = secure.ensure_all(tmp_path)
    for private in (files.ca_key, files.broker_key, files.users):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(files.broker_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    passwords = files.passwords()
    assert set(passwords) == set(secure.PRINCIPALS) and len(set(passwords.values())) == len(passwords)
    assert secure.ensure_all(tmp_path).passwords() == passwords  # kept across restarts
    props = secure.broker_properties(files, 19092, 19093)
    assert "PLAINTEXT" not in props
    assert re.search(r"^listeners=SASL_SSL://127\.0\.0\.1:19092,CONTROLLER://127\.0\.0\.1:19093$", props, re.M)
    assert "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL" in props
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in props
    assert "allow.everyone.if.no.acl.found=false" in props
    assert f"super.users=User:{secure.ADMIN};{secure.BROKER_PRINCIPAL}" in props
    assert sum(a == "--add-scram" for a in secure.scram_format_args(files)) == len(secure.PRINCIPALS)


def test_plaintext_broker_config_is_unchanged(tmp_path: Path) -> None:
    text = _kafka_properties(Ports(9092, 9093, 8123, 9000), tmp_path)
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n" in text
    assert "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n" in text
    assert "authorizer" not in text and "sasl" not in text


def test_stack_env_per_principal(tmp_path: Path) -> None:
    stack = DevStack(tmp_path, settings.load())
    ports = Ports(1, 2, 3, 4)
    assert settings.ENV_KAFKA_SECURITY_PROTOCOL not in stack.env(ports)
    with pytest.raises(UserError, match="--secure"):
        stack.env(ports, "pdx-service")
    stack.save_ports(ports, True)
    secure.ensure_all(tmp_path)
    env = stack.env(ports, "pdx-service")
    cfg = Settings.from_env(env)
    assert cfg.kafka_security.protocol == "SASL_SSL" and cfg.kafka_security.sasl_username == "pdx-service"
    assert cfg.kafka_security.sasl_mechanism == "SCRAM-SHA-512"
    assert stack.env(ports)[settings.ENV_KAFKA_SASL_USERNAME] == secure.ADMIN
    stack.save_ports(ports)  # a later save keeps the mode
    assert stack.secure_mode is True
    with pytest.raises(UserError, match="unknown principal"):
        stack.kafka_security("nobody")


def test_clickhouse_users_xml_grants(tmp_path: Path) -> None:
    users = chusers.ensure_credentials(tmp_path, "http://127.0.0.1:8123")
    path = chusers.credentials_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert chusers.ensure_credentials(tmp_path, "http://127.0.0.1:9999") == users  # same passwords, new URL
    xml = chusers.users_xml(users)
    for role, user in settings.CLICKHOUSE_DEV_USERS.items():
        assert f"<{user}>" in xml and users[role]["password"] not in xml  # sha256 only
    assert "GRANT SELECT ON pdx*.*" in xml
    assert "GRANT INSERT ON pdx.audit_ingest" in xml
    sink = xml.split("<pdx_sink>")[1].split("</pdx_sink>")[0]
    assert "SELECT" not in sink and "ALTER" not in sink and "ALL" not in sink
    default = xml.split("<default>")[1].split("</default>")[0]
    assert "<query>GRANT SYSTEM LISTEN ON *.*</query>" in default and default.count("<query>") == 1


def _cfg(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({settings.ENV_STATE_DIR: str(tmp_path), **env})


def test_clickhouse_login_order(tmp_path: Path) -> None:
    assert _cfg(tmp_path).clickhouse_login("reader") is None  # nothing configured: today's default user
    users = chusers.ensure_credentials(tmp_path, "http://127.0.0.1:8123")
    assert _cfg(tmp_path).clickhouse_login("sink") == ("pdx_sink", users["sink"]["password"])
    # the file belongs to another server: not used
    other = _cfg(tmp_path, **{settings.ENV_CLICKHOUSE_URL: "http://127.0.0.1:8124"})
    assert other.clickhouse_login("sink") is None
    both = _cfg(tmp_path, PDX_CLICKHOUSE_USER="ops", PDX_CLICKHOUSE_PASSWORD="s3cr3t-value")
    assert both.clickhouse_login("admin") == ("ops", "s3cr3t-value")
    per_role = _cfg(
        tmp_path,
        PDX_CLICKHOUSE_USER="ops",
        PDX_CLICKHOUSE_PASSWORD="p",
        PDX_CLICKHOUSE_READER_USER="grafana",
        PDX_CLICKHOUSE_READER_PASSWORD="g",
    )
    assert per_role.clickhouse_login("reader") == ("grafana", "g")
    assert per_role.clickhouse_login("sink") == ("ops", "p")
    moved = tmp_path / "elsewhere.json"
    moved.write_text(json.dumps({"url": "http://localhost:8123", "users": {"admin": {"user": "a", "password": "b"}}}))
    assert _cfg(tmp_path, **{settings.ENV_CLICKHOUSE_CREDENTIALS: str(moved)}).clickhouse_login("admin") == ("a", "b")
    with pytest.raises(settings.ConfigError):
        _cfg(tmp_path).clickhouse_login("root")
    with pytest.raises(settings.ConfigError, match="PDX_CLICKHOUSE_SINK_USER"):
        _cfg(tmp_path, PDX_CLICKHOUSE_SINK_PASSWORD="x")
    assert "s3cr3t-value" not in repr(both)


def test_compose_secure_override_agrees_with_secure_py() -> None:
    root = settings.REPO_ROOT
    override = yaml.safe_load((root / "compose.secure.yaml").read_text())["services"]
    base = yaml.safe_load((root / "compose.yaml").read_text())["services"]
    assert set(override) - {"kafka-acls"} <= set(base)
    assert override["kafka-acls"]["image"] == settings.KAFKA_IMAGE
    known = {v for k, v in vars(settings).items() if k.startswith("ENV_")}
    for name in ("pdx-init", "pdx-worker"):
        env = override[name]["environment"]
        assert set(env) <= known
        assert env[settings.ENV_KAFKA_SECURITY_PROTOCOL] == "SASL_SSL"
    assert override["pdx-worker"]["environment"][settings.ENV_KAFKA_SASL_USERNAME] == "pdx-worker"
    command = " ".join(override["kafka"]["command"])
    assert sorted(re.findall(r"name=([a-z-]+),", command)) == sorted(secure.PRINCIPALS)
    for principal in secure.PRINCIPALS:
        assert f"$${secure.env_name(principal)}" in command
    props = (root / "compose" / "kafka" / "server-secure.properties").read_text()
    protocol_map = re.search(r"^listener\.security\.protocol\.map=(.*)$", props, re.M)
    assert protocol_map is not None and "PLAINTEXT" not in protocol_map.group(1)
    assert "allow.everyone.if.no.acl.found=false" in props
    assert f"super.users=User:{secure.ADMIN};{secure.BROKER_PRINCIPAL}" in props
    ch = base["clickhouse"]
    users_xml = next(v.split(":")[0] for v in ch["volumes"] if "users.d" in v)
    text = (root / users_xml).read_text()
    assert '<default remove="remove"/>' in text
    for user in settings.CLICKHOUSE_DEV_USERS.values():
        assert f"<{user}>" in text
    for name in ("pdx-init", "pdx-worker"):
        env = base[name]["environment"]
        for role, user in settings.CLICKHOUSE_DEV_USERS.items():
            assert env[f"PDX_CLICKHOUSE_{role.upper()}_USER"] == user


def test_compose_acl_script_matches_the_rules(tmp_path: Path) -> None:
    files = secure.ensure_all(tmp_path)
    env, script, admin = secure.write_compose_files(files)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600 and stat.S_IMODE(admin.stat().st_mode) == 0o600
    lines = [line for line in script.read_text().splitlines() if "kafka-acls.sh" in line]
    assert len(lines) == len(secure.acl_rules())
    assert "/pdx/secure/ca.pem" in admin.read_text()
