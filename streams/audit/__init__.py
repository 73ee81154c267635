"""The audit trail: every decision as a row in ClickHouse, plus investigation, analytics and replay.

* ``sql/NNN_*.sql`` + :mod:`streams.audit.migrate` — versioned, idempotent migrations (``pdx audit migrate``):
  the ReplacingMergeTree audit table (dedup by request_id, monthly partitions, TTL from PDX_AUDIT_TTL_DAYS) and
  two materialized-view rollups (hourly per identity, daily per rule).
* :mod:`streams.audit.store` — ``connect(url, cfg=settings)``, ``audit_row(record)`` and
  ``AuditWriter.insert(records)``, which
  the stream's audit sink agent calls (raises on failure so the sink retries and does not commit offsets).
* :mod:`streams.audit.queries` / :mod:`streams.audit.risk` — timeline, explain, search, top, risk score;
  parameterised queries only.
* :mod:`streams.cli.audit` — ``pdx audit migrate|timeline|explain|search|top|risk`` and ``pdx report risk``
  (:mod:`streams.audit.report`, a self-contained HTML file).
* :mod:`streams.audit.impact` — ``pdx policy impact`` (replay / what-if under a candidate bundle).
* :mod:`streams.bench.audit` — ``pdx bench audit``.
* :mod:`streams.audit.dashboard` + ``grafana/`` — Grafana dashboard JSON and provisioning.
"""
