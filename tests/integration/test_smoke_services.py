"""The real local Kafka and ClickHouse work with the client libraries pdx is built on."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import clickhouse_connect
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams import config as settings

pytestmark = pytest.mark.integration


async def _create(bootstrap: str, *names: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def _consume(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=f"t-{uuid.uuid4().hex}"
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < count:
                msg = await consumer.getone()
                got.append((msg.key, msg.value))
    finally:
        await consumer.stop()
    return got


async def test_aiokafka_produce_consume(kafka_bootstrap: str) -> None:
    topic = f"smoke.{uuid.uuid4().hex[:8]}"
    await _create(kafka_bootstrap, topic, partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(30):
            await producer.send_and_wait(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    finally:
        await producer.stop()
    got = await _consume(kafka_bootstrap, topic, 30)
    assert sorted(v for _, v in got) == sorted(f"v{i}".encode() for i in range(30))


async def test_faust_agent_reads_one_topic_and_writes_another(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    src, dst = f"echo.in.{suffix}", f"echo.out.{suffix}"
    await _create(kafka_bootstrap, src, dst)
    env = {
        **os.environ,
        "ECHO_APP_ID": f"echo-{suffix}",
        "ECHO_IN": src,
        "ECHO_OUT": dst,
        "PYTHONPATH": str(Path(__file__).parent),
    }
    log = (tmp_path / "faust.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "faust_echo_app", "worker", "-l", "info", "--without-web"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(src, key=b"k", value=f"hello {i}".encode())
        finally:
            await producer.stop()
        got = await _consume(kafka_bootstrap, dst, 5, timeout=90)
        assert [v for _, v in got] == [f"HELLO {i}".encode() for i in range(5)]
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    assert worker.returncode is not None


def test_clickhouse_connect_roundtrip(clickhouse_url: str) -> None:
    # the dev server has no password-less user that may create anything: log in as the admin role
    login = settings.load().clickhouse_login("admin", clickhouse_url) or ("default", "")
    client = clickhouse_connect.get_client(dsn=clickhouse_url, username=login[0], password=login[1])
    db = f"pdx_smoke_{uuid.uuid4().hex[:8]}"  # the admin's privileges cover pdx* databases
    client.command(f"CREATE DATABASE {db}")
    try:
        client.command(
            f"CREATE TABLE {db}.t (ts DateTime64(6, 'UTC'), kind LowCardinality(String), attrs Map(String, String)) "
            "ENGINE = MergeTree ORDER BY ts"
        )
        now = dt.datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=dt.UTC)
        client.insert(
            f"{db}.t", [[now, "agent", {"env": "prod"}], [now, "human", {}]], column_names=["ts", "kind", "attrs"]
        )
        rows = client.query(
            f"SELECT ts, kind, attrs FROM {db}.t WHERE kind = {{k:String}}", parameters={"k": "agent"}
        ).result_rows
        assert len(rows) == 1
        ts, kind, attrs = rows[0]
        assert ts.replace(tzinfo=dt.UTC) == now
        assert kind == "agent" and attrs == {"env": "prod"}
        assert (
            client.query(f"SELECT toTypeName(kind) FROM {db}.t LIMIT 1").result_rows[0][0] == "LowCardinality(String)"
        )
    finally:
        client.command(f"DROP DATABASE {db}")
