"""Background pdx processes (workers, sinks) for the demo and the benchmarks; `pdx dev down` stops them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from streams import config
from streams.devservices import procs
from streams.errors import UserError


def _spawn_pdx(state_dir: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> tuple[int, Path]:
    """Start `pdx ARGS` in the background, pid and log under state_dir/workers (`pdx dev down` stops them)."""
    home = state_dir / "workers"
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"{name}.log"
    pid = procs.spawn(
        [sys.executable, "-m", "streams.cli.main", *args],
        cwd=Path.cwd(),
        log_file=log,
        pid_file=home / f"{name}.pid",
        env=env,
    )
    return pid, log


def spawn_sink(state_dir: Path, sink_id: str, extra_args: tuple[str, ...] = ()) -> tuple[int, Path]:
    """Start `pdx sink` in the background (with ``extra_args``, e.g. ``--metrics-port``); returns (pid, log)."""
    return _spawn_pdx(state_dir, sink_id, ["sink", "--sink-id", sink_id, *extra_args])


def spawn_worker(state_dir: Path, worker_id: str, extra_env: dict[str, str] | None = None) -> tuple[int, Path]:
    """Start `pdx worker` in the background; returns (pid, log). It writes <log>.ready when deciding."""
    ready = state_dir / "workers" / f"{worker_id}.ready"
    ready.unlink(missing_ok=True)
    env = {config.ENV_WORKER_ID: worker_id, config.ENV_READY_FILE: str(ready), **(extra_env or {})}
    return _spawn_pdx(state_dir, worker_id, ["worker", "--worker-id", worker_id], env)


def wait_until_ready(log: Path, timeout_s: float = 180.0) -> None:
    """Block until the worker started by spawn_worker says it is deciding (state loaded, partitions assigned).

    Why a file and not a probe request: a probe would be a real, audited decision about a fake identity,
    and would show up in investigators' timelines and analysts' risk reports.
    """
    ready = log.with_suffix(".ready")
    pid_file = log.with_suffix(".pid")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.exists():
            return
        if procs.read_pid(pid_file) is None:
            raise UserError(f"the pdx worker exited during start. Last lines of {log}:\n{procs.tail(log)}")
        time.sleep(0.1)
    raise UserError(f"the pdx worker was not ready within {timeout_s:.0f}s. Last lines of {log}:\n{procs.tail(log)}")


def worker_pid(state_dir: Path, worker_id: str) -> int | None:
    """The pid of the live background worker (or sink) ``worker_id``, None when it is not running."""
    return procs.read_pid(state_dir / "workers" / f"{worker_id}.pid")


def start_workers(state_dir: Path, worker_ids: list[str], extra_env: dict[str, str] | None = None,
                  timeout_s: float = 180.0) -> list[str]:
    """Start every worker of ``worker_ids`` that is not running, all at once, and wait until each is ready.

    Why all at once: each worker joining the consumer group makes the group rebalance; spawning them together
    lets the group settle in one or two rebalances instead of one per worker. Returns the ids started."""
    started = []
    for worker_id in worker_ids:
        if worker_pid(state_dir, worker_id) is None:
            spawn_worker(state_dir, worker_id, extra_env)
            started.append(worker_id)
    deadline = time.monotonic() + timeout_s
    for worker_id in started:
        wait_until_ready(state_dir / "workers" / f"{worker_id}.log", max(1.0, deadline - time.monotonic()))
    return started
