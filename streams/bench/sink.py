"""``pdx bench sink``: move N audit records from a Kafka topic into ClickHouse through the real audit sink.

What runs is what `pdx sink` runs: :meth:`streams.audit.sink.AuditSink.run` with its aiokafka consumer (in a
consumer group, offsets committed only after ClickHouse acknowledged) and its ClickHouse writer, pointed at a topic
of its own (``pdx.bench.audit.<random>``, the partition count of pdx.audit) and a database of its own
(``pdx_bench_<random>``, migrated with streams.audit.migrate). Both are removed afterwards unless ``--keep``.

Steps (only step 3 is the sink's figure):

1. Produce ``records`` synthetic AuditRecords (streams.bench.synthetic, encoded with streams.contracts.wire as the
   worker encodes them) to the topic, and write the same message bodies to a temporary Avro object container
   (streams.audit.avro_container). Not timed. To keep set-up short on a 1M run, at most :data:`DISTINCT_RECORDS`
   records are generated and encoded; the others are copies of them with a fresh request id written into the
   encoded bytes (the id is a fixed-length hex string, so the encoding stays valid).
2. The floor: ClickHouse ingesting that container with one ``INSERT INTO audit_ingest FORMAT Avro`` (the sink's own
   :meth:`AuditWriter.insert_avro`) into a fresh database, so through the same materialized views. That database is
   dropped before step 3, so its background merges do not run beside the sink. ``parse_only_rows_per_s``: the same
   container into a Null table with no view behind it (the Avro parse alone, what the views cost comes on top).
3. The sink, in a process of its own (so its peak RSS is the sink's alone), from an empty database and a new consumer
   group reading the topic from the start. ``seconds`` runs from the first record the sink fetched until ClickHouse
   acknowledged the insert holding the last one and its offsets were committed; ``startup_s`` (joining the group,
   connecting to ClickHouse) is reported apart.
4. Checks: ``rows_in_clickhouse`` (distinct request ids in audit_decisions) must equal ``records``, beside
   ``rows_total`` (rows before ReplacingMergeTree collapses duplicates; equal when none were inserted twice), and
   ``offsets_committed`` (the group's committed offsets summed over the partitions) must equal ``records``.

``peak_rss_mb`` is the sink process's peak resident set (``VmHWM`` of /proc/self/status in that process, see
:func:`_rss_mb`: Python, the imported modules, aiokafka's fetch buffers and the sink's batches),
``rss_start_mb`` its resident set before the sink started. ``sink_cpu_s`` is the CPU time (user + system) of the
sink process during step 3. Timings are wall-clock on a shared machine; sink and floor are measured in the same run.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.config import Settings

#: Records generated and encoded one by one; more are copies of these with a new request id (see step 1).
DISTINCT_RECORDS = 50_000
TARGETS = {"rows_per_s": 100_000.0, "ratio_to_floor": 0.3}
#: The sink process gives up (and the bench fails) when it has not moved every record within
#: SINK_TIMEOUT_S + records / SINK_TIMEOUT_RATE seconds.
SINK_TIMEOUT_S = 60.0
SINK_TIMEOUT_RATE = 5_000.0
_PRODUCE_CHUNK = 20_000


def _messages(records: int, seed: int = 11) -> Any:
    """``records`` single-object AuditRecord messages (bytes): distinct synthetic records, then id-swapped copies."""
    from streams.bench import synthetic
    from streams.contracts import wire

    distinct = min(records, DISTINCT_RECORDS)
    base: list[tuple[bytes, bytes]] = []
    for rec in synthetic.records(distinct, seed=seed):
        rid = rec["request"]["request_id"].encode()
        base.append((wire.encode("AuditRecord", rec), rid))
        yield base[-1][0]
    for i in range(distinct, records):
        message, rid = base[i % distinct]
        # not from a Random seeded like synthetic's: its stream would repeat the generated records' ids
        new = hashlib.md5(f"pdx-bench-sink:{seed}:{i}".encode(), usedforsecurity=False).hexdigest().encode()
        assert len(new) == len(rid)
        yield message.replace(rid, new)  # request.request_id and decision.request_id


async def _create_topic(cfg: Settings, topic: str, partitions: int) -> None:
    from aiokafka.admin import NewTopic

    from streams.kafka import clients

    admin = clients.admin(cfg)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _delete_topic(cfg: Settings, topic: str) -> None:
    from streams.kafka import clients

    admin = clients.admin(cfg)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def _produce(cfg: Settings, topic: str, records: int, partitions: int, container: Path,
                   log: Callable[[str], None]) -> int:
    """Send the messages round-robin over the partitions (acks=all, idempotent, like the worker's audit records) and
    write their bodies to ``container``; returns the bytes of message values produced."""
    from streams.audit import avro_container
    from streams.kafka import clients

    producer = clients.producer(cfg, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    produced = 0
    try:
        with container.open("wb") as out:
            out.write(avro_container.HEADER)
            chunk: list[bytes] = []
            for i, message in enumerate(_messages(records)):
                chunk.append(message)
                if len(chunk) == _PRODUCE_CHUNK or i == records - 1:
                    futures = [
                        await producer.send(topic, m, partition=(i - len(chunk) + 1 + k) % partitions)
                        for k, m in enumerate(chunk)
                    ]
                    await asyncio.gather(*futures)
                    out.write(avro_container.build(chunk)[len(avro_container.HEADER):])
                    produced += sum(len(m) for m in chunk)
                    log(f"bench sink: produced {i + 1:,} of {records:,} records")
                    chunk = []
    finally:
        await producer.stop()
    return produced


def _floor(cfg: Settings, container: Path, keep: bool) -> dict[str, Any]:
    """ClickHouse's own ingestion of the container (one insert, the sink's writer) into a fresh database."""
    from streams.audit.store import AuditWriter, connect
    from streams.bench.auditdb import fresh_database

    data = container.read_bytes()
    with fresh_database(cfg.clickhouse_url, "pdx_bench_floor", keep=keep, cfg=cfg) as db:
        # its own client: urllib3 sends a request body under the *connect* timeout (5 s in connect()), and
        # ClickHouse stops reading a large body for longer than that while it parses and writes the first blocks
        client = connect(cfg.clickhouse_url, cfg=cfg, connect_timeout=600, send_receive_timeout=1200)
        try:
            t = time.perf_counter()
            AuditWriter(client, database=db.database).insert_avro(data, token=None)
            seconds = time.perf_counter() - t
            parse_s = _parse_only(client, db.database, data)
        finally:
            client.close()
        rows = db.count(final=False)
    return {"seconds": seconds, "rows": rows, "container_bytes": len(data), "parse_seconds": parse_s}


def _parse_only(client: Any, database: str, data: bytes) -> float:
    """Seconds ClickHouse takes to read the container into a Null table of audit_ingest's structure with no
    view behind it: the Avro parse alone, so the JSON shows what the materialized views cost on top."""
    from string import Template

    from streams.audit import ingest

    ddl = Template(ingest.ingest_table()).substitute(db=database).replace(ingest.INGEST_TABLE, "audit_parse_only", 1)
    client.command(ddl)
    t = time.perf_counter()
    client.raw_insert(f"{database}.audit_parse_only", insert_block=data, fmt="Avro")
    return time.perf_counter() - t


def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (``VmRSS``) or its peak (``VmHWM``) in MiB, from /proc/self/status.

    Why not ``ru_maxrss``: Linux carries it across fork and exec, so a process spawned by the benchmark would
    report the parent's resident set at the fork (which holds the floor's container) as its own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # the kernel reports kB
    return 0.0


async def _drive_sink(cfg: Settings, topic: str, group: str, database: str, records: int) -> dict[str, Any]:
    """Run the real sink (AuditSink.run) until every record is inserted and committed; its timings."""
    from streams.audit.sink import AuditSink

    sink = AuditSink(cfg, "bench-sink", audit_topic=topic, checkpoint_topic=None, database=database,
                     group_id=group, migrate=False, role="admin")  # the sink login may write pdx's database only
    rss_start = _rss_mb()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    task = asyncio.create_task(sink.run())
    first: float | None = None
    timeout_s = SINK_TIMEOUT_S + records / SINK_TIMEOUT_RATE
    deadline = started + timeout_s
    while sink.inserted < records:  # counted once ClickHouse acknowledged and the offsets were committed
        if task.done():
            task.result()  # raises what stopped the sink
            raise RuntimeError("the audit sink stopped before moving every record")
        if first is None and sink.fetched:
            first = time.perf_counter()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the audit sink moved {sink.inserted:,} of {records:,} records in {timeout_s:.0f}s")
        await asyncio.sleep(0.002)
    done = time.perf_counter()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    first = first or started
    return {
        "seconds": done - first,
        "startup_s": first - started,
        "inserted": sink.inserted,
        "dead_lettered": sink.dead_lettered,
        "retries": sink.retries,
        "sink_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "rss_start_mb": rss_start,
    }


def _sink_process(cfg: Settings, topic: str, group: str, database: str, records: int, conn: Any) -> None:
    """The sink's own process (spawned): runs :func:`_drive_sink`, sends back its result or its error."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="[sink process] %(levelname)s %(name)s: %(message)s")
    try:
        result = asyncio.run(_drive_sink(cfg, topic, group, database, records))
        result["peak_rss_mb"] = _rss_mb("VmHWM")  # the peak resident set of this process over its life
        conn.send(result)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _run_sink(cfg: Settings, topic: str, group: str, database: str, records: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_sink_process, args=(cfg, topic, group, database, records, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(SINK_TIMEOUT_S + records / SINK_TIMEOUT_RATE + 120):
            raise RuntimeError("the sink process did not report")
        result: dict[str, Any] = parent.recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    if "error" in result:
        raise RuntimeError(f"the sink process failed: {result['error']}")
    return result


async def _committed(cfg: Settings, topic: str, group: str, partitions: int) -> int:
    """The group's committed offsets on ``topic``, summed (records it will not be given again)."""
    from aiokafka import TopicPartition

    from streams.kafka import clients

    consumer = clients.consumer(cfg, group_id=group)
    await consumer.start()
    try:
        total = 0
        for p in range(partitions):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


def run_sink_bench(
    cfg: Settings,
    records: int = 1_000_000,
    *,
    partitions: int | None = None,
    keep: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Produce, measure the floor, run the sink, check the table (module docstring); the JSON of `pdx bench sink`."""
    from streams.audit import sink as sink_module
    from streams.bench.auditdb import fresh_database

    partitions = partitions or cfg.request_partitions
    run_id = uuid.uuid4().hex[:10]
    topic, group = f"pdx.bench.audit.{run_id}", f"pdx-bench-sink-{run_id}"
    asyncio.run(_create_topic(cfg, topic, partitions))
    try:
        with tempfile.TemporaryDirectory(prefix="pdx-bench-sink-") as tmp:
            container = Path(tmp) / "floor.avro"
            t = time.perf_counter()
            produced = asyncio.run(_produce(cfg, topic, records, partitions, container, log))
            produce_s = time.perf_counter() - t
            log("bench sink: timing ClickHouse's own ingestion of the same rows (one Avro container)")
            floor = _floor(cfg, container, keep)
        with fresh_database(cfg.clickhouse_url, "pdx_bench", keep=keep, cfg=cfg) as db:
            log(f"bench sink: running the audit sink on {topic} into {db.database}")
            sink = _run_sink(cfg, topic, group, db.database, records)
            distinct, total = db.client.query(
                f"SELECT uniqExact(request_id), count() FROM {db.database}.audit_decisions"
            ).result_rows[0]
            version = db.client.query("SELECT version()").result_rows[0][0]
            database = db.database
        committed = asyncio.run(_committed(cfg, topic, group, partitions))
    finally:
        if not keep:
            asyncio.run(_delete_topic(cfg, topic))
    rate = records / sink["seconds"] if sink["seconds"] else 0.0
    floor_rate = floor["rows"] / floor["seconds"] if floor["seconds"] else 0.0
    ratio = rate / floor_rate if floor_rate else 0.0
    checks = {
        "rows_per_s": (round(rate), TARGETS["rows_per_s"], rate >= TARGETS["rows_per_s"]),
        "ratio_to_floor": (round(ratio, 3), TARGETS["ratio_to_floor"], ratio >= TARGETS["ratio_to_floor"]),
        "rows_in_clickhouse": (int(distinct), records, int(distinct) == records),
        "offsets_committed": (committed, records, committed == records),
        "floor_rows": (floor["rows"], records, floor["rows"] == records),
    }
    return {
        "records": records,
        "seconds": round(sink["seconds"], 3),
        "rows_per_s": round(rate),
        "floor_rows_per_s": round(floor_rate),
        "floor_seconds": round(floor["seconds"], 3),
        "parse_only_rows_per_s": round(floor["rows"] / floor["parse_seconds"]) if floor["parse_seconds"] else 0,
        "ratio_to_floor": round(ratio, 3),
        "peak_rss_mb": round(sink["peak_rss_mb"], 1),
        "peak_rss_measures": "VmHWM of the sink's own process (spawned for the run): its whole peak resident set",
        "rss_start_mb": round(sink["rss_start_mb"], 1),
        "sink_cpu_s": round(sink["sink_cpu_s"], 2),
        "startup_s": round(sink["startup_s"], 2),
        "rows_in_clickhouse": int(distinct),
        "rows_total": int(total),
        "offsets_committed": committed,
        "dead_lettered": sink["dead_lettered"],
        "insert_retries": sink["retries"],
        "message_bytes": produced,
        "container_bytes": floor["container_bytes"],
        "produce_s_untimed": round(produce_s, 1),
        "partitions": partitions,
        "sink_settings": {
            "audit_batch_max": cfg.audit_batch_max,
            "audit_batch_wait_ms": cfg.audit_batch_wait_ms,
            "insert_streams": sink_module.INSERT_STREAMS,
        },
        "targets": {name: {"value": v, "target": want, "pass": ok} for name, (v, want, ok) in checks.items()},
        "meets_targets": all(ok for _v, _w, ok in checks.values()),
        "clickhouse_version": version,
        "cpu_count": os.cpu_count(),
        "topic": topic if keep else None,
        "database": database if keep else None,
    }
