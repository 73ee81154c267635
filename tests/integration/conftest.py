"""Fixtures shared by the integration tests that need a deciding pdx (more than the bare services)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams import config as settings
from streams.client import PolicyClient
from streams.demo.scenario_file import load_scenarios
from streams.devservices import procs
from streams.devservices.workers import spawn_worker, wait_until_ready
from streams.grants import record_grants
from streams.kafka.topics import create_topics
from streams.ops import load_inventory, publish_policies

DEMO_INVENTORY = settings.REPO_ROOT / "examples" / "inventory.yaml"


@pytest.fixture(scope="module")
def pipeline(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Topics, the shipped policies, the demo inventory, the demo's delegation grants (alice and bob to their
    agents, as `pdx demo` records them) and one running worker ("w1"); yields its state dir."""
    s = settings.load()
    asyncio.run(create_topics(s, 4, 4))
    asyncio.run(publish_policies(str(settings.POLICIES_DIR), "tests", cfg=settings.load()))
    asyncio.run(load_inventory(str(DEMO_INVENTORY), show_progress=False, cfg=settings.load()))
    asyncio.run(record_grants(s, load_scenarios(True).delegations, "tests"))
    state = tmp_path_factory.mktemp("workers")
    _, log = spawn_worker(state, "w1")
    wait_until_ready(log)
    yield state
    for pid_file in (state / "workers").glob("*.pid"):
        procs.stop(pid_file)


@pytest.fixture
async def client(pipeline: Path) -> AsyncIterator[PolicyClient]:
    """A PolicyClient talking to the module's pipeline worker."""
    async with PolicyClient(timeout_s=15.0) as c:
        yield c


@pytest.fixture
def stack_env(services: Any) -> Iterator[dict[str, str]]:
    """The environment for a `pdx` subprocess on the test run's dev services (benchmarks, the demo); stops the
    workers it left so none stays in a consumer group for the tests that follow."""
    if services.stack is None:
        pytest.skip("needs the local dev services (the command starts and stops processes in their state dir)")
    state_dir = services.stack.state_dir
    yield {**os.environ, settings.ENV_STATE_DIR: str(state_dir)}
    for pid_file in (state_dir / "workers").glob("*.pid"):
        procs.stop(pid_file)
