"""Serve the ClickHouse HTTP and native protocols from the chdb-core engine (ClickHouse 26.x).

Run by ``pdx dev up clickhouse`` as ``python -m streams.devservices.chserver --data DIR`` with the working
directory holding a ``config.xml`` (listen_host, http_port, tcp_port). Why this odd shape: chdb is an
in-process engine; ``SYSTEM START LISTEN`` makes it open the server ports, and only the low-level
``chdb._chdb.query`` call keeps the listener alive — so we issue it followed by a query that never ends.
Clients (clickhouse-connect, the ClickHouse CLI) then talk to a real ClickHouse server; data is on disk in
DIR and survives a restart. No other chdb connection may be opened in this process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class ClusterNode:
    """One server of a ``remote_servers`` cluster: its native port and the login Distributed tables use on it."""

    shard: int
    tcp_port: int
    user: str = "default"
    password: str = ""
    host: str = "127.0.0.1"


def remote_servers_xml(name: str, nodes: Sequence[ClusterNode]) -> str:
    """``<remote_servers>`` with one cluster: a ``<shard>`` per shard number, each node a ``<replica>`` of it."""
    shards: dict[int, list[ClusterNode]] = {}
    for node in nodes:
        shards.setdefault(node.shard, []).append(node)
    out = [f"  <remote_servers>\n    <{escape(name)}>"]
    for shard in sorted(shards):
        out.append("      <shard><internal_replication>true</internal_replication>")
        for n in shards[shard]:
            out.append(
                f"        <replica><host>{escape(n.host)}</host><port>{n.tcp_port}</port>"
                f"<user>{escape(n.user)}</user><password>{escape(n.password)}</password></replica>"
            )
        out.append("      </shard>")
    out.append(f"    </{escape(name)}>\n  </remote_servers>")
    return "\n".join(out) + "\n"


def config_xml(
    http_port: int,
    tcp_port: int,
    users_xml: Path,
    *,
    cluster: tuple[str, Sequence[ClusterNode]] | None = None,
    macros: Mapping[str, str] | None = None,
) -> str:
    """The ``config.xml`` this server reads from its working directory: ports, the users file, and optionally a
    ``remote_servers`` cluster and ``macros`` (``{shard}``, ``{replica}``) for Distributed / Replicated tables.

    What chdb-core 26.9's server does not do (tried): it starts no embedded Keeper (``<keeper_server>`` opens no
    port), it refuses ON CLUSTER DDL ("Replicated DDL queries are disabled": no distributed DDL worker), and a
    Replicated table it creates (with an external ZooKeeper) stays read-only (no interserver HTTP address). A
    local cluster is therefore shards of plain MergeTree tables under Distributed tables, migrated node by node.
    """
    parts = [
        "<clickhouse>",
        "  <listen_host>127.0.0.1</listen_host>",
        f"  <http_port>{int(http_port)}</http_port>",
        f"  <tcp_port>{int(tcp_port)}</tcp_port>",
        f"  <user_directories><users_xml><path>{escape(str(users_xml))}</path></users_xml></user_directories>",
        # views run as their definer (the admin who migrated), so the sink needs INSERT only (chusers.py)
        "  <ignore_empty_sql_security_in_create_view_query>false</ignore_empty_sql_security_in_create_view_query>",
    ]
    if macros:
        parts.append("  <macros>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in macros.items()) + "</macros>")
    text = "\n".join(parts) + "\n"
    if cluster is not None:
        text += remote_servers_xml(*cluster)
    return text + "</clickhouse>\n"

# ~9.5 years of sleep(3) calls, one row per block: keeps the listening query alive with no CPU use.
_SERVE = (
    "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
    "SELECT sleep(3) FROM numbers(100000000) SETTINGS max_block_size = 1, max_execution_time = 0"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="data directory (created if missing)")
    args = parser.parse_args(argv)
    import importlib

    chdb_low = importlib.import_module("chdb._chdb")

    print(f"chserver: serving ClickHouse from {args.data}", flush=True)
    chdb_low.query(_SERVE, "TabSeparated", path=args.data)
    print("chserver: serving query ended unexpectedly", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
