"""Local, embedded Kafka and ClickHouse for the demo and the tests (no Docker needed)."""
