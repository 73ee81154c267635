"""Is Kafka there? One real metadata request (used by `pdx dev status` and before a worker starts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from streams.config import Settings
from streams.kafka import clients


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def kafka_health(cfg: Settings, timeout_s: float = 3.0) -> tuple[bool, str]:
    """A real metadata request against the first bootstrap server: (healthy, detail)."""
    first = cfg.kafka_bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not port.isdigit() or not port_open(int(port), host or "127.0.0.1", 1.0):
        return False, f"nothing listens on {first}"
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a failed probe is reported by us, once

    async def probe() -> tuple[bool, str]:
        client = clients.low_level(cfg, request_timeout_ms=int(timeout_s * 1000))
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            brokers = client.cluster.brokers()
            return (bool(brokers), f"{len(brokers)} broker(s), controller ok" if brokers else "no brokers in metadata")
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy; the message is the detail
            return False, f"metadata request failed: {type(exc).__name__}: {exc}".strip()
        finally:
            await client.close()

    return asyncio.run(probe())
