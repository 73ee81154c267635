"""``pdx bench propagation``: how long from producing a change until the workers decide with it.

* suspend: from producing a suspended identity until the worker deciding for it denies with
  ``identity_suspended``;
* publish: from producing a policy bundle until every request partition (so every worker) decides with it.

One probe identity per request partition, so every worker's partitions are probed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from streams import config
from streams.bench.load import BENCH_WORKER, spawn_quiet_worker, synthetic_identity
from streams.bench.stats import summary

_RESOURCE = {"id": "feature-flags", "type": "config"}


def _probes(n_parts: int) -> dict[int, str]:
    """A probe identity for every request partition."""
    from streams.kafka.state import partition_for

    probes: dict[int, str] = {}
    i = 0
    while len(probes) < n_parts:
        ident = f"probe-agent-{i}"
        probes.setdefault(partition_for(ident, n_parts), ident)
        i += 1
    return probes


def _probe_policy(trial: int) -> str:
    """A monitor-mode policy that changes the bundle without changing any decision."""
    return (f"name: bench-{trial}\ndescription: propagation probe {trial}\nowner: bench\nmode: monitor\n"
            f"controls: [SP800-207:PDP]\nrules:\n  - id: bench-probe-{trial}\n    effect: deny\n    when:\n"
            f"      - action: \"bench:never-{trial}\"\n    reason: {{code: bench_probe, message: probe}}\n")


async def _propagation(cfg: config.Settings, trials: int) -> dict[str, Any]:
    from streams.client import PolicyClient
    from streams.contracts import signing
    from streams.kafka import clients
    from streams.kafka.state import put_identities
    from streams.ops import publish_policies
    from streams.policy.testing import policy_dir_with

    n_parts = cfg.request_partitions
    probes = _probes(n_parts)
    signer = signing.signing_key(cfg, signing.INVENTORY)
    producer = await clients.start_producer(cfg)
    await put_identities(producer, [synthetic_identity(p, "active") for p in probes.values()], signer)
    suspend_ms: list[float] = []
    publish_ms: list[float] = []
    variant = policy_dir_with(Path(cfg.state_dir) / "bench-policies", {})
    async with PolicyClient(settings=cfg, timeout_s=10) as client:
        seen_workers: set[str] = set()
        for ident in probes.values():
            d = await client.check(ident, "config:read", _RESOURCE)
            seen_workers.add(d.worker_id)
        for trial in range(trials):
            # suspend: from producing the change until the deciding worker denies
            ident = probes[trial % n_parts]
            await put_identities(producer, [synthetic_identity(ident, "active")], signer)
            while (await client.check(ident, "config:read", _RESOURCE)).decision != "allow":
                await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            await put_identities(producer, [synthetic_identity(ident, "suspended")], signer)
            while (await client.check(ident, "config:read", _RESOURCE)).reason_codes != ["identity_suspended"]:
                pass
            suspend_ms.append((time.perf_counter() - t0) * 1000)
            await put_identities(producer, [synthetic_identity(ident, "active")], signer)
            # publish: from producing the bundle until every partition (every worker) decides with it
            (variant / "zz-bench.yaml").write_text(_probe_policy(trial))
            t0 = time.perf_counter()
            version = await publish_policies(str(variant), "bench", cfg=cfg)
            pending = set(probes.values())
            while pending:
                ds = await asyncio.gather(*(client.check(p, "config:read", _RESOURCE) for p in pending))
                pending = {d_ident for d_ident, d in zip(list(pending), ds, strict=True)
                           if d.bundle_version != version}
            publish_ms.append((time.perf_counter() - t0) * 1000)
    await producer.stop()
    await publish_policies(str(config.require_policies_dir("pdx bench")), "bench", cfg=cfg)
    return {
        "trials": trials,
        "workers": sorted(w for w in seen_workers if w),
        **summary(suspend_ms, (50, 99), prefix="suspend_", ndigits=1),
        **summary(publish_ms, (50, 99), prefix="publish_", ndigits=1),
    }


def run_propagation(cfg: config.Settings, trials: int, n_workers: int) -> dict[str, Any]:
    """Start the local stack with ``n_workers`` workers and time ``trials`` suspends and publishes."""
    from streams.demo.runner import prepare_stack
    from streams.devservices import procs
    from streams.devservices.workers import wait_until_ready

    prepare_stack(cfg, BENCH_WORKER)
    state_dir = cfg.state_dir
    for i in range(2, n_workers + 1):
        if procs.read_pid(state_dir / "workers" / f"bench-worker-{i}.pid") is None:
            wait_until_ready(spawn_quiet_worker(state_dir, f"bench-worker-{i}"))
    time.sleep(5 if n_workers > 1 else 0)  # let the group rebalance onto the new workers
    return asyncio.run(_propagation(cfg, trials))
