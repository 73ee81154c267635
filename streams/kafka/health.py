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


def kafka_health(cfg: Settings, timeout_s: float = 3.0, expect_brokers: int | None = None) -> tuple[bool, str]:
    """A real metadata request through the first bootstrap server that accepts connections: (healthy, detail).
    ``expect_brokers``: healthy only when the metadata lists at least that many brokers (a dev cluster whose
    nodes are not all up is reported, not hidden behind the one that answers)."""
    servers = [b.strip() for b in cfg.kafka_bootstrap.split(",") if b.strip()]
    reachable = [b for b in servers if _reachable(b)]
    if not reachable:
        return False, f"nothing listens on {', '.join(servers) or '(no bootstrap servers)'}"
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a failed probe is reported by us, once

    async def probe() -> tuple[bool, str]:
        client = clients.low_level(cfg.replace(kafka_bootstrap=",".join(reachable)),
                                   request_timeout_ms=int(timeout_s * 1000))
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            brokers = client.cluster.brokers()
            if not brokers:
                return False, "no brokers in metadata"
            if expect_brokers is not None and len(brokers) < expect_brokers:
                return False, f"{len(brokers)} of {expect_brokers} brokers in metadata"
            return True, f"{len(brokers)} broker(s), controller ok"
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy; the message is the detail
            return False, f"metadata request failed: {type(exc).__name__}: {exc}".strip()
        finally:
            await client.close()

    return asyncio.run(probe())


def _reachable(server: str) -> bool:
    host, _, port = server.rpartition(":")
    return port.isdigit() and port_open(int(port), host or "127.0.0.1", 1.0)
