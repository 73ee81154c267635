"""One declaration per setting, and `pdx config`: the effective settings, where each came from, secrets masked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from streams import config
from streams.cli import config_cmd
from streams.cli.main import main


def test_every_setting_is_declared_once_with_a_unique_variable() -> None:
    declared = config.declared_settings()
    envs = [s.env for _, s in declared]
    assert len(envs) == len(set(envs))
    groups = {"kafka_security", "request_limits"}
    fields = {f.name for f in dataclasses.fields(config.Settings)} - groups
    assert fields | {f"kafka_security.{f.name}" for f in dataclasses.fields(config.KafkaSecurity)} | {
        f"request_limits.{f.name}" for f in dataclasses.fields(config.RequestLimits)
    } == {path for path, _ in declared}
    assert all(s.doc for _, s in declared)


def test_the_old_names_are_derived_from_the_declarations() -> None:
    by_field = dict(config.declared_settings())
    assert config.ENV_JWKS_FILE == by_field["jwks_file"].env == "PDX_JWKS_FILE"
    assert config.ENV_REQUEST_MAX_BYTES == by_field["request_limits.max_message_bytes"].env
    assert config.ENV_KAFKA_SASL_PASSWORD == "PDX_KAFKA_SASL_PASSWORD"
    assert config.ENV_CLICKHOUSE_READER_PASSWORD == "PDX_CLICKHOUSE_READER_PASSWORD"
    assert (config.DEFAULT_KAFKA_PORT, config.DEFAULT_MAX_DELEGATION_DEPTH, config.DEFAULT_APP_ID) == (
        9092, 4, "pdx-decider"
    )
    assert config.Settings.from_env({}).max_delegation_depth == config.DEFAULT_MAX_DELEGATION_DEPTH


def test_sources_say_env_default_or_derived() -> None:
    _, origins = config.Settings.from_env_explained({config.ENV_KAFKA_PORT: "19092", config.ENV_WORKER_ID: "w1"})
    by_env = {o.env: o for o in origins}
    assert (by_env["PDX_KAFKA_PORT"].value, by_env["PDX_KAFKA_PORT"].source) == (19092, "env")
    assert (by_env["PDX_KAFKA_BOOTSTRAP"].value, by_env["PDX_KAFKA_BOOTSTRAP"].source) == ("127.0.0.1:19092",
                                                                                           "derived")
    assert by_env["PDX_AUDIT_TTL_DAYS"].source == "default"
    assert by_env["PDX_WORKER_ID"].source == "env"


def test_a_bad_value_still_names_the_variable() -> None:
    with pytest.raises(config.ConfigError, match="PDX_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs PDX_KAFKA_SASL_USERNAME"):
        config.Settings.from_env({config.ENV_KAFKA_SECURITY_PROTOCOL: "SASL_SSL"})
    with pytest.raises(config.ConfigError, match=r"PDX_REPLY_TOPICS allows 'pdx\.audit'"):
        config.Settings.from_env({config.ENV_REPLY_TOPICS: "pdx.audit"})
    with pytest.raises(config.ConfigError, match="PDX_JWKS_FILE='/nope': no such file"):
        config.Settings.from_env({config.ENV_JWKS_FILE: "/nope"})


def test_sasl_mechanism_defaults_only_for_sasl() -> None:
    plain = config.Settings.from_env({}).kafka_security
    assert plain.sasl_mechanism is None and plain.protocol == "PLAINTEXT"
    sasl = config.Settings.from_env({config.ENV_KAFKA_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
                                     config.ENV_KAFKA_SASL_USERNAME: "u", config.ENV_KAFKA_SASL_PASSWORD: "p"})
    assert sasl.kafka_security.sasl_mechanism == "SCRAM-SHA-512"


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        config.ENV_STATE_DIR: str(tmp_path),
        config.ENV_KAFKA_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
        config.ENV_KAFKA_SASL_USERNAME: "svc",
        config.ENV_KAFKA_SASL_PASSWORD: "kafka-secret-1",
        config.ENV_CLICKHOUSE_READER_USER: "investigator",
        config.ENV_CLICKHOUSE_READER_PASSWORD: "ch-secret-2",
    }


def test_explain_masks_secrets_and_names_sources(tmp_path: Path) -> None:
    data = config_cmd.explain(_env(tmp_path))
    text = json.dumps(data)
    assert "kafka-secret-1" not in text and "ch-secret-2" not in text
    by_env = {s["env"]: s for s in data["settings"]}
    assert by_env["PDX_KAFKA_SASL_PASSWORD"] == {**by_env["PDX_KAFKA_SASL_PASSWORD"], "value": "****",
                                                 "source": "env"}
    assert by_env["PDX_KAFKA_SASL_USERNAME"]["value"] == "svc"
    assert by_env["PDX_STATE_DIR"]["value"] == str(tmp_path.resolve())
    reader = data["clickhouse_logins"]["reader"]
    assert reader == {"user": "investigator", "password": "****", "source": "env PDX_CLICKHOUSE_READER_USER"}
    assert data["clickhouse_logins"]["admin"]["source"].startswith("none")


def test_dev_stack_credentials_file_is_a_source(tmp_path: Path) -> None:
    creds = tmp_path / config.CLICKHOUSE_CREDENTIALS_FILE
    creds.parent.mkdir(parents=True)
    creds.write_text(json.dumps({"url": "http://127.0.0.1:8123",
                                 "users": {"sink": {"user": "pdx_sink", "password": "dev-secret-3"}}}))
    data = config_cmd.explain({config.ENV_STATE_DIR: str(tmp_path)})
    assert data["clickhouse_logins"]["sink"] == {"user": "pdx_sink", "password": "****",
                                                 "source": f"dev stack file {creds.resolve()}"}
    assert "dev-secret-3" not in json.dumps(data)


def test_pdx_config_prints_text_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in _env(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "PDX_KAFKA_SASL_PASSWORD" in out and "kafka-secret-1" not in out and "ch-secret-2" not in out
    assert "PDX_KAFKA_PORT" in out and "(default)" in out and "(env)" in out
    assert main(["config", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {s["env"] for s in data["settings"]} >= {"PDX_KAFKA_BOOTSTRAP", "PDX_MAX_DELEGATION_DEPTH"}


def test_pdx_config_reports_a_bad_value_as_one_line(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(config.ENV_KAFKA_PORT, "0")
    assert main(["config"]) == 2
    assert "PDX_KAFKA_PORT=0 is out of range" in capsys.readouterr().err
