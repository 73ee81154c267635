"""examples/java, a client that uses no pdx code (kafka-clients + Avro BinaryMessageEncoder), gets the same
decisions as the Python PolicyClient: the reply protocol of docs/contracts.md is enough to talk to pdx."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams import config as settings
from streams.client import PolicyClient
from streams.model import Decision

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EXAMPLE = settings.REPO_ROOT / "examples" / "java"


@dataclass(frozen=True)
class Case:
    """A request with a known answer under the shipped policies and the demo inventory (as in the demo)."""

    identity: str
    action: str
    resource: dict[str, str]
    ttl_s: int | None
    expected: str
    expected_code: str


CONFIG = {"id": "feature-flags", "type": "config", "environment": "production", "sensitivity": "internal"}
PROD_DB = {"id": "orders-db", "type": "database", "environment": "production", "sensitivity": "restricted"}
CASES = {
    "allow": Case("agent-config-bot", "config:read", CONFIG, None, "allow", "config_read"),
    "deny": Case("agent-intern", "db:connect", PROD_DB, 900, "deny", "agent_not_tagged_for_production"),
    "step_up": Case("agent-config-bot", "config:write", CONFIG, None, "step_up", "approval_required"),
}
ON_BEHALF_OF = ["alice"]


def _java_major() -> int | None:
    """Major version of the `java` on PATH (17 for "17.0.15", 8 for "1.8.0_392"), None when unreadable."""
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


@pytest.fixture(scope="session")
def java_example_jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build examples/java once per session into a temporary directory (the work tree stays clean)."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("the Java example test needs `java` (17+) and `mvn` on PATH")
    major = _java_major()
    if major is None or major < 17:
        pytest.skip(f"the Java example needs Java 17+, `java -version` says {major or 'something unreadable'}")
    out = tmp_path_factory.mktemp("java-example")
    build = ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(EXAMPLE / "pom.xml"), f"-Dpdx.build.dir={out}",
             "package"]
    # Offline first: quick and network-free when ~/.m2 already has everything; else let Maven download
    # (a clean machine fetches about 15 MB from Maven Central once).
    result = subprocess.run([*build, "-o"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        result = subprocess.run(build, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"mvn package failed for {EXAMPLE}:\n{(result.stdout + result.stderr)[-4000:]}")
    return out / "pdx-java-example.jar"


def _java_args(case: Case) -> list[str]:
    """The example's command line for a case."""
    args = ["--env", case.resource["environment"], "--sensitivity", case.resource["sensitivity"],
            "--on-behalf-of", ",".join(ON_BEHALF_OF), "--timeout", "15"]
    if case.ttl_s is not None:
        args += ["--ttl", str(case.ttl_s)]
    return [*args, case.identity, case.action, case.resource["id"], case.resource["type"]]


async def _python_decision(bootstrap: str, case: Case) -> Decision:
    async with PolicyClient(bootstrap, timeout_s=15.0) as client:
        context = {"requested_ttl_s": case.ttl_s} if case.ttl_s is not None else {}
        return await client.check(case.identity, case.action, case.resource, context, on_behalf_of=ON_BEHALF_OF)


@pytest.mark.parametrize("outcome", CASES)
def test_java_client_gets_the_same_decision_as_the_python_client(
    outcome: str, java_example_jar: Path, pipeline: Path, kafka_bootstrap: str
) -> None:
    case = CASES[outcome]
    env = {**os.environ, settings.ENV_KAFKA_BOOTSTRAP: kafka_bootstrap}  # the example reads it like pdx does
    run = subprocess.run(["java", "-jar", str(java_example_jar), *_java_args(case)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr[-3000:]}"
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one line of JSON, got: {run.stdout!r}"
    java = json.loads(lines[0])
    python = asyncio.run(_python_decision(kafka_bootstrap, case))

    assert (java["decision"], java["reason_codes"]) == (python.decision, python.reason_codes)
    assert java["decision"] == case.expected and case.expected_code in java["reason_codes"], java  # a real answer
    assert re.fullmatch(r"[0-9a-f]{32}", java["request_id"]) and java["request_id"] != python.request_id
    assert java["worker_id"] == "w1"  # decided by the worker, not a client-side pdp_timeout
