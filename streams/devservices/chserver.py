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
