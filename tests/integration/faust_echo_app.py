"""A minimal faust-streaming app used by the smoke test: an agent reads one topic and writes another."""

import os

import faust

app = faust.App(
    os.environ["ECHO_APP_ID"],
    broker=f"kafka://{os.environ['PDX_KAFKA_BOOTSTRAP']}",
    store="memory://",
    web_enabled=False,
    topic_partitions=1,
)
source = app.topic(os.environ["ECHO_IN"], value_type=bytes, value_serializer="raw", key_serializer="raw")
sink = app.topic(os.environ["ECHO_OUT"], value_type=bytes, value_serializer="raw", key_serializer="raw")


@app.agent(source)
async def upper(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value.upper())
