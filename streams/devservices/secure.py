"""`pdx dev up --secure`: a dev CA, the broker certificate, SCRAM principals and their ACLs.

Everything lives under ``<state_dir>/secure/`` and is generated once (kept across restarts):

* ``ca.pem`` / ``ca.key``: a dev certificate authority (the key is 0600 and never leaves the state dir);
* ``broker.pem`` / ``broker.key``: the broker's certificate (SAN 127.0.0.1 and localhost), signed by the CA.
  It serves the client listener (SASL_SSL) and authenticates the broker to its own controller listener (SSL
  with a required client certificate: the only principal that may talk to the controller is the broker's);
* ``kafka-users.json`` (0600): one random password per principal (:data:`PRINCIPALS`).

The principals and what each may do (:func:`acl_rules`, applied with Kafka's Admin API by ``KafkaAcls.java``):

=============  ===========================================================================================
pdx-admin      super user: creates topics, sets ACLs (what ``--print-env`` exports by default)
pdx-policy     the only principal (besides pdx-admin) that may write pdx.policies and pdx.jwks (trusted token
               issuers: who manages policies manages whose tokens they trust); reads them
pdx-inventory  writes and reads pdx.inventory
pdx-approver   writes and reads pdx.approvals, pdx.delegations (delegation grants) and pdx.approval-requests
               (resolving them)
pdx-service    writes pdx.requests; reads pdx.decisions, pdx.replies.* (groups prefixed pdx-service) and
               pdx.approval-requests (waiting for an approval)
pdx-worker     reads pdx.requests and the state topics; writes decisions, replies, approval requests, audit,
               dlq (and audit checkpoints); reads pdx.audit (redelivery, in-process sink); the worker's group, internal
               topics and transactional ids (all prefixed with the app id); idempotent writes
pdx-sink       reads pdx.audit (and checkpoints) with the sink group; writes pdx.dlq
=============  ===========================================================================================
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from streams import config

ADMIN = "pdx-admin"
PRINCIPALS = ("pdx-admin", "pdx-policy", "pdx-inventory", "pdx-approver", "pdx-service", "pdx-worker", "pdx-sink")
MECHANISM = "SCRAM-SHA-512"
#: the broker certificate's subject; the controller listener admits only this principal (mTLS)
BROKER_CN = "pdx-broker"
BROKER_PRINCIPAL = f"User:CN={BROKER_CN}"
#: the Kafka service's host name in compose.secure.yaml (also in the broker certificate)
COMPOSE_KAFKA_HOST = "kafka"
#: prefix of the reply topics services read (config.DEFAULT_REPLY_TOPICS has "pdx.replies.*")
REPLY_PREFIX = next(t[:-1] for t in config.DEFAULT_REPLY_TOPICS if t.endswith("*"))


@dataclass(frozen=True)
class AclRule:
    """ALLOW principal operation on resource (resource_type TOPIC|GROUP|CLUSTER|TRANSACTIONAL_ID)."""

    principal: str
    operation: str
    resource_type: str
    name: str
    pattern: str = "LITERAL"  # or PREFIXED

    def line(self) -> str:
        return f"User:{self.principal} {self.operation} {self.resource_type} {self.name} {self.pattern}"


def _topic(principal: str, ops: tuple[str, ...], *topics: str, pattern: str = "LITERAL") -> list[AclRule]:
    return [AclRule(principal, op, "TOPIC", t, pattern) for t in topics for op in (*ops, "DESCRIBE")]


def acl_rules(app_id: str = config.DEFAULT_APP_ID) -> list[AclRule]:
    """The ACLs of every principal but the super user (see the module docstring)."""
    checkpoints = getattr(config, "TOPIC_CHECKPOINTS", None)
    audit_in = (config.TOPIC_AUDIT, *((checkpoints,) if checkpoints else ()))
    state = config.STATE_TOPICS
    rules: list[AclRule] = [
        # the owner of a state topic also reads it (publishing checks the latest signed record; group-less)
        *_topic("pdx-policy", ("READ", "WRITE"), config.TOPIC_POLICIES, config.TOPIC_JWKS),
        *_topic("pdx-inventory", ("READ", "WRITE"), config.TOPIC_INVENTORY),
        *_topic("pdx-approver", ("READ", "WRITE"), config.TOPIC_APPROVALS, config.TOPIC_DELEGATIONS,
                config.TOPIC_APPROVAL_REQUESTS),
        # services: requests in, decisions and their own reply topics out
        *_topic("pdx-service", ("WRITE",), config.TOPIC_REQUESTS),
        *_topic("pdx-service", ("READ",), config.TOPIC_DECISIONS),
        # a caller waiting for an approval (PolicyClient.check(wait_for_approval=...)) reads its resolution
        *_topic("pdx-service", ("READ",), config.TOPIC_APPROVAL_REQUESTS),
        *_topic("pdx-service", ("READ",), REPLY_PREFIX, pattern="PREFIXED"),
        AclRule("pdx-service", "READ", "GROUP", "pdx-service", "PREFIXED"),
        # workers
        *_topic("pdx-worker", ("READ",), config.TOPIC_REQUESTS, *state),
        *_topic("pdx-worker", ("READ", "WRITE"), *audit_in),
        *_topic("pdx-worker", ("WRITE",), config.TOPIC_DECISIONS, config.TOPIC_DLQ, config.TOPIC_APPROVAL_REQUESTS),
        *_topic("pdx-worker", ("WRITE",), REPLY_PREFIX, pattern="PREFIXED"),
        # faust's own topics (e.g. <app_id>-__assignor-__leader) are created on first start
        *_topic("pdx-worker", ("READ", "WRITE", "CREATE"), app_id, pattern="PREFIXED"),
        AclRule("pdx-worker", "READ", "GROUP", app_id, "PREFIXED"),  # the worker's and its in-process sink's group
        AclRule("pdx-worker", "WRITE", "TRANSACTIONAL_ID", app_id, "PREFIXED"),
        AclRule("pdx-worker", "DESCRIBE", "TRANSACTIONAL_ID", app_id, "PREFIXED"),
        AclRule("pdx-worker", "IDEMPOTENT_WRITE", "CLUSTER", "kafka-cluster"),
        # the stand-alone audit sink
        *_topic("pdx-sink", ("READ",), *audit_in),
        *_topic("pdx-sink", ("WRITE",), config.TOPIC_DLQ),
        AclRule("pdx-sink", "READ", "GROUP", app_id, "PREFIXED"),
    ]
    return rules


# ---- files -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecureFiles:
    home: Path

    @property
    def ca(self) -> Path:
        return self.home / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.home / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.home / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.home / "broker.key"

    @property
    def users(self) -> Path:
        return self.home / "kafka-users.json"

    def passwords(self) -> dict[str, str]:
        """The principals' passwords (generated on first use)."""
        ensure_passwords(self)
        data = json.loads(self.users.read_text())
        return {str(k): str(v) for k, v in data["passwords"].items()}


def secure_files(state_dir: Path) -> SecureFiles:
    return SecureFiles(state_dir / "secure")


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file readable by its owner only (0600 from the start, never world-readable for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, 0o600)


def ensure_passwords(files: SecureFiles) -> None:
    existing: dict[str, str] = {}
    if files.users.exists():
        existing = json.loads(files.users.read_text()).get("passwords", {})
    if all(p in existing for p in PRINCIPALS):
        return
    passwords = {p: existing.get(p) or secrets.token_urlsafe(24) for p in PRINCIPALS}
    write_private(files.users, json.dumps({"mechanism": MECHANISM, "passwords": passwords}, indent=2) + "\n")


def ensure_certs(files: SecureFiles) -> None:
    """The dev CA and the broker certificate (valid 2 years; regenerated when missing)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if files.ca.exists() and files.ca_key.exists() and files.broker_cert.exists() and files.broker_key.exists():
        return
    files.home.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pdx dev CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(COMPOSE_KAFKA_HOST),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    write_private(files.ca_key, ca_key.private_bytes(serialization.Encoding.PEM, pkcs8, none))
    write_private(files.broker_key, key.private_bytes(serialization.Encoding.PEM, pkcs8, none))
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.broker_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_all(state_dir: Path) -> SecureFiles:
    files = secure_files(state_dir)
    ensure_certs(files)
    ensure_passwords(files)
    return files


# ---- broker configuration ----------------------------------------------------------------------------------


def _pem_inline(path: Path) -> str:
    """A PEM file as one properties value (Kafka reads PEM keystores inline; newlines escaped)."""
    return path.read_text().strip().replace("\n", "\\n")


def broker_properties(files: SecureFiles, kafka_port: int, controller_port: int) -> str:
    """The listener and security part of server.properties in secure mode."""
    admin_password = files.passwords()[ADMIN]
    jaas = (
        f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" '
        f'password="{admin_password}";'
    )
    return f"""listeners=SASL_SSL://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{kafka_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms={MECHANISM}
sasl.mechanism.inter.broker.protocol={MECHANISM}
listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={jaas}
ssl.keystore.type=PEM
ssl.keystore.certificate.chain={_pem_inline(files.broker_cert)}
ssl.keystore.key={_pem_inline(files.broker_key)}
ssl.truststore.type=PEM
ssl.truststore.certificates={_pem_inline(files.ca)}
ssl.endpoint.identification.algorithm=https
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:{ADMIN};{BROKER_PRINCIPAL}
"""


def scram_format_args(files: SecureFiles) -> list[str]:
    """``kafka-storage format`` arguments that create every principal's SCRAM credential."""
    args: list[str] = []
    for name, password in files.passwords().items():
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return args


def admin_client_properties(files: SecureFiles, bootstrap: str) -> str:
    """A Java client config for pdx-admin (what KafkaAcls.java, or kafka-acls.sh, runs with)."""
    password = files.passwords()[ADMIN]
    return f"""bootstrap.servers={bootstrap}
security.protocol=SASL_SSL
sasl.mechanism={MECHANISM}
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" \
password="{password}";
ssl.truststore.type=PEM
ssl.truststore.location={files.ca}
"""


def security(files: SecureFiles, principal: str = ADMIN) -> config.KafkaSecurity:
    """How a client authenticates as ``principal`` against the secure dev broker."""
    passwords = files.passwords()
    if principal not in passwords:
        from streams.errors import UserError

        raise UserError(f"unknown principal {principal!r}: choose one of {', '.join(PRINCIPALS)}")
    return config.KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism=MECHANISM,
        sasl_username=principal,
        sasl_password=passwords[principal],
        ssl_cafile=files.ca,
    )


def security_env(sec: config.KafkaSecurity) -> dict[str, str]:
    """The PDX_KAFKA_* variables for ``sec`` (what ``pdx dev up --secure --print-env`` prints)."""
    return {
        config.ENV_KAFKA_SECURITY_PROTOCOL: sec.protocol,
        config.ENV_KAFKA_SASL_MECHANISM: sec.sasl_mechanism or MECHANISM,
        config.ENV_KAFKA_SASL_USERNAME: sec.sasl_username or "",
        config.ENV_KAFKA_SASL_PASSWORD: sec.sasl_password or "",
        config.ENV_KAFKA_SSL_CAFILE: str(sec.ssl_cafile or ""),
    }


# ---- compose.secure.yaml -----------------------------------------------------------------------------------


def env_name(principal: str) -> str:
    """``pdx-worker`` -> ``PDX_KAFKA_PASSWORD_PDX_WORKER`` (compose.secure.yaml's variables)."""
    return "PDX_KAFKA_PASSWORD_" + principal.upper().replace("-", "_")


_ACL_OPTION = {"TOPIC": "--topic", "GROUP": "--group", "TRANSACTIONAL_ID": "--transactional-id"}


def kafka_acls_script(app_id: str = config.DEFAULT_APP_ID, bootstrap: str = f"{COMPOSE_KAFKA_HOST}:19092") -> str:
    """The same ACLs as kafka-acls.sh commands (run in the Kafka image by compose.secure.yaml's kafka-acls job)."""
    lines = ["#!/bin/sh", "# written by `pdx dev secure-files`: the ACLs of streams/devservices/secure.py", "set -e"]
    base = (
        f"/opt/kafka/bin/kafka-acls.sh --bootstrap-server {bootstrap} "
        "--command-config /pdx/secure/admin-compose.properties"
    )
    for rule in acl_rules(app_id):
        target = "--cluster" if rule.resource_type == "CLUSTER" else f"{_ACL_OPTION[rule.resource_type]} '{rule.name}'"
        op = "".join(w.capitalize() for w in rule.operation.split("_"))
        lines.append(
            f"{base} --add --allow-principal User:{rule.principal} --operation {op} {target} "
            f"--resource-pattern-type {rule.pattern.lower()}"
        )
    return "\n".join(lines) + "\n"


def write_compose_files(files: SecureFiles, app_id: str = config.DEFAULT_APP_ID) -> list[Path]:
    """What compose.secure.yaml mounts and reads: compose.env (the principals' passwords, 0600), the ACL script and
    the admin client config for inside the compose network."""
    passwords = files.passwords()
    env = files.home / "compose.env"
    write_private(env, "".join(f"{env_name(p)}={pw}\n" for p, pw in passwords.items()))
    script = files.home / "kafka-acls.sh"
    script.write_text(kafka_acls_script(app_id))
    script.chmod(0o755)
    admin = files.home / "admin-compose.properties"
    text = admin_client_properties(files, f"{COMPOSE_KAFKA_HOST}:19092").replace(str(files.ca), "/pdx/secure/ca.pem")
    write_private(admin, text)
    return [env, script, admin]
