"""``pdx bench faults``: what callers and the audit trail see when a part of the stack fails under load.

The local stack is prepared like the other stream benchmarks (:func:`streams.demo.runner.prepare_stack`: topics,
audit schema, shipped policies, demo inventory, the audit sink ``audit-sink-1``); every other background worker
of the state dir is stopped, and the benchmark runs **two** workers of its own (``faults-worker-N``, audit sink
off) in the workers' consumer group, plus that one sink process. Before each scenario it makes sure Kafka,
ClickHouse, the sink and two workers are up and that a probe request on every request partition is answered.

Load: an **open-loop** sender (``--rate`` requests/s, default 300; it never waits for a reply before the next
send) of the benchmark request mix (:data:`streams.bench.load.MIX`), each request produced to an **explicit
request partition, round robin** (key = identity id, as PolicyClient does, but the partition chosen so that every
partition carries load and the partition of every request is known), with ``reply_to`` = ``pdx.decisions``,
``reply_partition`` = 0 and ``deadline`` = send time + ``--timeout`` (default 5 s, PolicyClient's default). The
producer is the reliable one (acks=all, idempotent), so the harness adds no duplicates of its own. A reader
assigned to **every** partition of ``pdx.decisions`` records **every** reply (not only the first) of the run's
request ids with its arrival time, decision and worker id. A caller's view is computed from those timestamps
exactly as :meth:`streams.client.PolicyClient.send` decides it: answered when the first reply arrived within
``--timeout`` of the send, else a ``pdp_timeout`` deny. Request ids are ``<run>-<scenario>-v<i>`` (valid) and
``<run>-<scenario>-m<i>`` (malformed), ``<run>`` = ``faults-<random>``, so ClickHouse counts are per scenario.

Scenarios (``--only NAME``, repeatable, runs a subset; by default all, in this order):

``worker_kill``
    Steady load; then ``--kills`` times (default 5): wait (≤ 60 s) until the group is *stable* (over the last
    1.5 s every request partition was answered by exactly one worker, every live worker answers at least one
    partition, twice in a row 1 s apart), SIGKILL the oldest live worker that owns partitions (its whole process
    group: no LeaveGroup, no commit), start a replacement at once, and wait (≤ 120 s) for the takeover.
    **Takeover** of one kill = max over the partitions the victim owned just before the kill (from the replies'
    worker ids) of (arrival of the first reply to a request *sent to that partition at or after the kill*, minus
    the kill instant). Only requests sent after the kill count, so a reply the victim produced just before dying
    cannot end the takeover; the value is when a caller whose request lands on a dead worker's partition is
    answered again, whoever answers it (the survivor or the replacement). A takeover not seen within the bound is
    ``null`` (and a percentile that falls on it is ``null``: "more than the bound"). 10 s more load after the last
    kill.
``sink_kill``
    3 s of load, SIGKILL the audit sink, 5 s without it, start it again, 10 s more load.
``broker_restart``
    3 s of load, stop Kafka (SIGTERM, SIGKILL after 30 s) and start it again on the same ports with the same data
    dir (:meth:`streams.devservices.services.DevStack.stop_service` / ``start_service``), 10 s more load. Workers
    and sink are left running; the open-loop sender keeps sending while the broker is down.
``clickhouse_outage``
    3 s of load, stop ClickHouse, ``--outage-s`` seconds (default 60) under load without it, start it again (same
    ports, same data), 10 s more load.
``broker_leader_kill`` (only with ``--brokers 3``: a 3-node cluster, see ``pdx dev up --brokers 3``)
    3 s of load, SIGKILL the broker that leads most ``pdx.requests`` partitions (partition 0's leader among equals,
    :func:`leader_victim`; no controlled shutdown), 10 s more load with two brokers (topics replicated 3 times,
    min.insync.replicas 2, so acks=all writes go on), then start the broker again. ``recovery_s`` is measured from
    the kill; also ``victim_broker``, ``victim_partitions``, ``leaders_before`` / ``leaders_after`` (partition:
    broker), ``broker_back_s`` (the restart), ``requests`` (valid requests attempted) and ``failed_closed`` (of
    them, ``pdp_timeouts``).
``malformed``
    ``--malformed`` (default 20,000) malformed requests at 1,000/s interleaved with valid ones at ``--rate`` for as
    long. Categories (:func:`malformed_category`, :data:`EXPECTED`; the expectation is what docs/contracts.md
    promises): undecodable bytes (``garbage_bytes``, ``empty_value``, ``truncated``, ``unknown_fingerprint``,
    ``wrong_schema``: dead-lettered only, no reply, no audit row); bad reply routes (``reply_to_protected`` =
    pdx.policies, ``reply_to_requests`` = pdx.requests, ``reply_to_not_allowed``, ``reply_topic_missing`` (an
    allowed pdx.replies.* name that does not exist), ``reply_to_empty``, ``reply_partition_99``,
    ``reply_partition_negative``: deny ``invalid_reply_route`` audited and dead-lettered, no reply); an invalid
    field (``invalid_sensitivity``: deny ``invalid_request`` replied, audited, dead-lettered); oversized
    attributes (every 100th: ``oversized_64k``, a request with 64 KiB of context attributes: answered and
    audited, whether decided or denied for its size; every 4,000th: ``oversized_600k``, 600 KiB, below Kafka's
    1 MiB limit: the contract says nothing, so only what happened is reported).

Every scenario reports (``null`` where it does not apply):

* ``name``; ``seconds`` (from the first send until the audit table settled); ``load_s`` (seconds of sending);
  ``offered_rps``.
* ``attempted`` (requests the sender tried to produce), ``sent`` (the broker acknowledged them), ``send_failed``
  (the producer gave up, or had not resolved them after 60 s); ``valid_sent``, ``malformed_sent``.
* ``answered``: valid requests whose first reply arrived within ``--timeout`` of the send; ``pdp_timeouts``: valid
  requests that did not (what a PolicyClient caller got as a ``pdp_timeout`` deny, including requests whose
  send failed), so ``answered + pdp_timeouts`` = valid requests attempted; of those ``late_replies`` (answered
  only after the timeout) and ``never_answered`` (no reply at all by the end of the scenario).
* ``conflicting``: request ids answered more than once with *different* decision values (must be 0), with up to
  5 ``conflicting_examples`` (each reply's decision, reason codes, worker and seconds after the send);
  ``duplicates``: answered more than once, always with the same decision; ``redecided``: request ids whose replies
  name more than one worker id (a recorded decision replayed after a redelivery keeps its worker id, so it is a
  duplicate, not a re-decision); ``misrouted``: replies on a ``pdx.decisions`` partition other than the requested one
  (must be 0).
* ``audit_rows``: ``count()`` of the scenario's rows in ``audit_decisions FINAL`` once the sink caught up
  (waited for until every acknowledged request that must be audited has a row, at most 180 s, or 30 s without
  progress; ``settle_s`` is that wait, ``settled`` whether it completed); ``audit_request_ids``: distinct request
  ids among them (``audit_rows`` - ``audit_request_ids`` = rows FINAL did not collapse into one per request);
  ``audit_conflicting``: request ids whose audit rows hold more than one decision value; ``audit_disagrees``:
  answered request ids whose first reply's decision is in none of their audit rows (the trail does not record
  what the caller was told).
* ``lost``: valid requests the broker acknowledged that have no audit row after the settle wait (must be 0), with
  up to 5 ``lost_examples``.
* ``caller_outage_s``: the longest time callers failed closed: per request partition, the largest gap between the
  send times of two consecutive valid requests answered within the timeout (:func:`caller_outage`), the maximum
  over partitions (about 1/(rate/partitions) when nothing failed).
* ``recovery_s`` (sink_kill, broker_restart, clickhouse_outage): the takeover computation applied to every request
  partition from the instant the fault ended (sink started again, service healthy again): how long until every
  partition answered a request sent after that.
* worker_kill: ``takeover_s`` (one per kill), ``takeover_p50_s``, ``takeover_p99_s`` and ``kills`` (per kill:
  victim, its partitions, whether the group was stable before, per-partition takeover, the replacement and
  seconds from the kill until it was ready). Fault timings: ``sink_down_s``, ``broker_down_s``,
  ``clickhouse_down_s`` (from the stop until the service answered its health check again).
* ``workers_exited`` / ``sink_exited``: background processes that died without being killed by the benchmark;
  ``notes``: what had to be restarted before the scenario; ``send_errors``: the producer's errors by type.
* malformed only: ``malformed`` per category (sent, replied, reason codes of the replies, audited, the expected
  behaviour and whether it held), ``dlq_records`` (records added to pdx.dlq during the scenario) beside
  ``dlq_expected``, ``protected_topic_writes`` (records added to pdx.policies / pdx.inventory / pdx.approvals /
  pdx.jwks / pdx.delegations: must be 0).

The top level: ``takeover_p50_s``, ``takeover_p99_s`` (worker_kill; ``null`` when not run), ``takeover_s``,
``violations`` (every must-be-zero count that was not, and every malformed expectation that did not hold),
``run_id``, ``settings``, ``seconds`` and ``scenarios``. Progress goes to stderr. The benchmark measures; it does
not retry, dedupe or otherwise correct what pdx does.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams import config
from streams.bench.load import MIX, spawn_quiet_worker, stop_workers
from streams.bench.stats import percentile
from streams.console import say
from streams.contracts import wire
from streams.errors import PdxError, UserError

SCENARIOS = ("worker_kill", "sink_kill", "broker_restart", "clickhouse_outage", "broker_leader_kill", "malformed")
#: Scenarios that need a replicated cluster (``--brokers 3``); run by default only then.
CLUSTER_SCENARIOS = ("broker_leader_kill",)
CLUSTER_BROKERS = 3

#: Workers in the consumer group during every scenario.
WORKERS = 2
WORKER_PREFIX = "faults-worker-"
#: The reply partition every benchmark request names.
REPLY_PARTITION = 0
BASELINE_S = 3.0  # load before a fault
AFTER_S = 10.0  # load after the fault is over
SINK_DOWN_S = 5.0
STABLE_WINDOW_S = 1.5
STABLE_BOUND_S = 60.0
TAKEOVER_BOUND_S = 120.0
READY_BOUND_S = 120.0
PROBE_BOUND_S = 120.0
SETTLE_BOUND_S = 180.0
SETTLE_STALL_S = 30.0
SEND_ACK_BOUND_S = 60.0
MALFORMED_RATE = 1000.0

VALID = "valid"
UNDECODABLE = ("garbage_bytes", "empty_value", "truncated", "unknown_fingerprint", "wrong_schema")
BAD_ROUTES = ("reply_to_protected", "reply_to_requests", "reply_to_not_allowed", "reply_topic_missing",
              "reply_to_empty", "reply_partition_99", "reply_partition_negative")
#: The categories that take turns; the oversized ones are interleaved rarely (they are big).
ROUND_ROBIN = (*UNDECODABLE, *BAD_ROUTES, "invalid_sensitivity")
MISSING_REPLY_TOPIC = "pdx.replies.faults-missing"


@dataclass(frozen=True)
class Expected:
    """What docs/contracts.md promises for a category: a reply (with this reason code), an audit row, a DLQ
    entry. None: the contract says nothing; only what happened is reported."""

    replied: bool | None
    audited: bool | None
    dead_lettered: bool | None
    reason: str | None = None


EXPECTED: dict[str, Expected] = {
    **{c: Expected(False, False, True) for c in UNDECODABLE},
    **{c: Expected(False, True, True) for c in BAD_ROUTES},
    "invalid_sensitivity": Expected(True, True, True, "invalid_request"),
    "oversized_64k": Expected(True, True, None),
    "oversized_600k": Expected(None, None, None),
}


# ---- pure logic (tests/unit/bench/test_faults_logic.py) ------------------------------------------------------


def leader_victim(leaders: Mapping[int, int]) -> int:
    """The broker to kill, from ``{partition: leader broker}``: the one leading most partitions, partition 0's
    leader when it is among them, else the lowest broker id among them."""
    counts = Counter(leaders.values())
    most = max(counts.values())
    if counts.get(leaders.get(0, -1), 0) == most:
        return leaders[0]
    return min(b for b, n in counts.items() if n == most)


def malformed_category(i: int) -> str:
    """The category of the i-th malformed request: every 4,000th (from 1,999) ``oversized_600k``, every other
    100th (from 99) ``oversized_64k``, else the :data:`ROUND_ROBIN` categories in turn."""
    if i % 4000 == 1999:
        return "oversized_600k"
    if i % 100 == 99:
        return "oversized_64k"
    return ROUND_ROBIN[i % len(ROUND_ROBIN)]


def malformed_value(category: str, request: Mapping[str, Any], salt: int = 0) -> bytes:
    """The record value of a malformed request of ``category`` made from a valid request dict (AccessRequest
    fields, as ``AccessRequest.to_dict()`` gives them)."""
    rng = random.Random(salt)
    req = {**request, "resource": dict(request["resource"]), "context": dict(request["context"])}
    if category == "garbage_bytes":
        raw = rng.randbytes(rng.randint(1, 200))
        return (b"\x00" + raw[1:]) if raw[:1] == wire.MAGIC[:1] else raw
    if category == "empty_value":
        return b""
    if category == "wrong_schema":
        from streams.model import Decision, ReasonCode

        return wire.encode("Decision", Decision.fail_closed(str(req["request_id"]), ReasonCode.INVALID_REQUEST,
                                                            "not a request").to_dict())
    body = wire.encode("AccessRequest", req)
    if category == "truncated":
        return body[: max(wire.HEADER_LEN + 1, len(body) // 2)]
    if category == "unknown_fingerprint":
        return wire.MAGIC + bytes(b ^ 0xFF for b in body[2 : wire.HEADER_LEN]) + body[wire.HEADER_LEN :]
    routes: dict[str, tuple[str, int]] = {
        "reply_to_protected": (config.TOPIC_POLICIES, REPLY_PARTITION),
        "reply_to_requests": (config.TOPIC_REQUESTS, REPLY_PARTITION),
        "reply_to_not_allowed": ("orders.events", REPLY_PARTITION),
        "reply_topic_missing": (MISSING_REPLY_TOPIC, REPLY_PARTITION),
        "reply_to_empty": ("", REPLY_PARTITION),
        "reply_partition_99": (config.TOPIC_DECISIONS, 99),
        "reply_partition_negative": (config.TOPIC_DECISIONS, -1),
    }
    if category in routes:
        req["reply_to"], req["reply_partition"] = routes[category]
    elif category == "invalid_sensitivity":
        req["resource"]["sensitivity"] = "top-secret"
    elif category in ("oversized_64k", "oversized_600k"):
        size = 1024 if category == "oversized_64k" else 10240
        req["context"]["attributes"] = {f"bulk-{j:03d}": "x" * size for j in range(64 if size == 1024 else 60)}
    else:
        raise ValueError(f"unknown malformed category {category!r}")
    return wire.encode("AccessRequest", req)


def takeover_by_partition(kill_t: float, partitions: Iterable[int],
                          answered: Iterable[tuple[int, float, float]]) -> dict[int, float | None]:
    """Per partition in ``partitions``: seconds from ``kill_t`` until the first reply to a request sent to that
    partition at or after ``kill_t`` (None: no such reply). ``answered`` = (request partition, sent at, first
    reply at) of answered requests, all on one clock."""
    wanted = set(partitions)
    first: dict[int, float] = {}
    for part, sent_t, reply_t in answered:
        if part in wanted and sent_t >= kill_t and (part not in first or reply_t < first[part]):
            first[part] = reply_t
    return {p: (round(first[p] - kill_t, 3) if p in first else None) for p in sorted(wanted)}


def takeover_of(per_partition: Mapping[int, float | None]) -> float | None:
    """The takeover of one kill: the slowest of its partitions; None when one was not taken over (or none)."""
    values = list(per_partition.values())
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


def takeover_summary(values: Sequence[float | None]) -> dict[str, float | None]:
    """``takeover_p50_s`` / ``takeover_p99_s`` (nearest rank, :mod:`streams.bench.stats`) of the takeovers; an
    unmeasured one (None) ranks above every measured one, and a percentile that falls on it is None."""
    ranked = [math.inf if v is None else v for v in values]
    out: dict[str, float | None] = {}
    for q in (50, 99):
        p = percentile(ranked, q)
        out[f"takeover_p{q}_s"] = None if math.isnan(p) or math.isinf(p) else round(p, 3)
    return out


@dataclass(frozen=True)
class ReplyOutcome:
    duplicates: int  # answered more than once, every time with the same decision
    conflicting: int  # answered more than once with different decisions
    conflicting_ids: list[str]


def reply_outcomes(decisions: Mapping[str, Sequence[str]]) -> ReplyOutcome:
    """Duplicates and conflicts among all replies seen, ``{request_id: [decision of each reply]}``."""
    duplicates = 0
    conflicting: list[str] = []
    for rid, seen in decisions.items():
        if len(seen) < 2:
            continue
        if len(set(seen)) > 1:
            conflicting.append(rid)
        else:
            duplicates += 1
    return ReplyOutcome(duplicates, len(conflicting), sorted(conflicting))


def timeliness(requests: Iterable[tuple[float, float | None]], timeout_s: float) -> dict[str, int]:
    """A caller's view of each valid request, (sent at, first reply at or None): ``answered`` within the
    timeout, else ``pdp_timeouts``; of those ``late_replies`` (answered after it) and ``never_answered``."""
    answered = late = never = 0
    for sent_t, reply_t in requests:
        if reply_t is None:
            never += 1
        elif reply_t - sent_t <= timeout_s:
            answered += 1
        else:
            late += 1
    return {"answered": answered, "pdp_timeouts": late + never, "late_replies": late, "never_answered": never}


def caller_outage(requests: Iterable[tuple[int, float, bool]]) -> float:
    """The longest time callers failed closed: per request partition, the largest gap between the send times of
    consecutive requests answered in time (the partition's first and last sends count as answered ends), from
    (partition, sent at, answered in time); the maximum over partitions, 0.0 when nothing was sent."""
    by_part: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for part, sent_t, ok in requests:
        by_part[part].append((sent_t, ok))
    longest = 0.0
    for sends in by_part.values():
        sends.sort()
        last_ok = sends[0][0]
        for i, (t, ok) in enumerate(sends):
            if ok or i == len(sends) - 1:
                longest = max(longest, t - last_ok)
                last_ok = t
    return round(longest, 3)


def lost_ids(accepted: Iterable[str], audited: Iterable[str]) -> list[str]:
    """Accepted request ids with no audit row, sorted."""
    return sorted(set(accepted) - set(audited))


def audit_consistency(first_reply: Mapping[str, str], audit_rows: Iterable[tuple[str, str]]) -> dict[str, int]:
    """``audit_conflicting`` (ids whose audit rows hold more than one decision) and ``audit_disagrees`` (answered
    ids whose first reply's decision is in none of their audit rows), from (request_id, decision) rows."""
    by_id: dict[str, set[str]] = defaultdict(set)
    for rid, decision in audit_rows:
        by_id[rid].add(decision)
    return {
        "audit_conflicting": sum(1 for ds in by_id.values() if len(ds) > 1),
        "audit_disagrees": sum(1 for rid, d in first_reply.items() if rid in by_id and d not in by_id[rid]),
    }


def partition_owners(replies: Iterable[tuple[int, float, str]], since: float) -> dict[int, set[str]]:
    """``{request partition: workers that answered it}`` from (partition, reply at, worker id) at or after
    ``since``."""
    owners: dict[int, set[str]] = defaultdict(set)
    for part, t, worker in replies:
        if t >= since:
            owners[part].add(worker)
    return dict(owners)


def group_stable(owners: Mapping[int, set[str]], live: Sequence[str], partitions: int) -> bool:
    """Every partition answered by exactly one live worker, and every live worker answering at least one
    (when there are enough partitions)."""
    if any(len(owners.get(p, ())) != 1 for p in range(partitions)):
        return False
    owning = {w for p in range(partitions) for w in owners[p]}
    return owning <= set(live) and (partitions < len(live) or owning == set(live))


def choose_victim(owners: Mapping[int, set[str]], live: Sequence[str]) -> tuple[str, list[int]]:
    """The oldest live worker (``live`` in start order) that answers some partition, and its partitions; the
    oldest live one with no partitions when none does."""
    for worker in live:
        parts = sorted(p for p, ws in owners.items() if worker in ws)
        if parts:
            return worker, parts
    return live[0], []


def malformed_report(rows: Iterable[tuple[str, bool, Sequence[str], bool]]) -> dict[str, dict[str, Any]]:
    """Per category, from (category, replied, reason codes of its replies, audited) of each acknowledged
    malformed request: counts, the reason codes seen, the expectation (:data:`EXPECTED`) and whether it held
    (``ok``; None when nothing is promised)."""
    report: dict[str, dict[str, Any]] = {}
    codes: dict[str, set[str]] = defaultdict(set)
    for category, replied, reasons, audited in rows:
        r = report.setdefault(category, {"sent": 0, "replied": 0, "audited": 0})
        r["sent"] += 1
        r["replied"] += int(replied)
        r["audited"] += int(audited)
        codes[category].update(reasons)
    for category, r in report.items():
        exp = EXPECTED.get(category, Expected(None, None, None))
        r["reason_codes"] = sorted(codes[category])
        r["expected"] = {"replied": exp.replied, "audited": exp.audited, "dead_lettered": exp.dead_lettered,
                         "reason": exp.reason}
        checks = []
        if exp.replied is not None:
            checks.append(r["replied"] == (r["sent"] if exp.replied else 0))
        if exp.audited is not None:
            checks.append(r["audited"] == (r["sent"] if exp.audited else 0))
        if exp.reason is not None and r["replied"]:
            checks.append(r["reason_codes"] == [exp.reason])
        r["ok"] = all(checks) if checks else None
    return dict(sorted(report.items()))


def violations(scenarios: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every must-be-zero count of a scenario that is not zero, and every malformed expectation that failed."""
    out: list[str] = []
    for s in scenarios:
        if s.get("error"):
            out.append(f"{s['name']}: did not complete: {s['error']}")
            continue
        for key in ("lost", "conflicting", "misrouted", "protected_topic_writes"):
            if s.get(key):
                out.append(f"{s['name']}: {key} = {s[key]}")
        for category, r in (s.get("malformed") or {}).items():
            if r.get("ok") is False:
                out.append(f"{s['name']}: {category}: expected {r['expected']}, got sent {r['sent']}, "
                           f"replied {r['replied']}, audited {r['audited']}")
    return out


# ---- the harness ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Sent:
    rid: str
    partition: int
    valid: bool
    category: str = VALID
    t: float = 0.0  # time.monotonic() when produced
    acked: bool | None = None  # None: the producer has not resolved it (yet)


@dataclass(frozen=True, slots=True)
class Reply:
    t: float
    decision: str
    worker_id: str
    reply_partition: int
    codes: tuple[str, ...]


Maker = Callable[[int], tuple[Sent, bytes, bytes]]


class Load:
    """An open-loop sender: ``make(i)`` every 1/rate s (catching up when late, never waiting for a reply or for
    the broker: each produce is its own task), until stopped or ``limit`` requests were made."""

    def __init__(self, harness: Harness, make: Maker, rate: float, limit: int | None = None) -> None:
        self.h, self.make, self.rate, self.limit = harness, make, rate, limit
        self.sends: list[Sent] = []
        self.errors: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self.started = self.stopped = 0.0

    def start(self) -> Load:
        self._runner = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        self.started = time.monotonic()
        i = 0
        while not self._stopping and (self.limit is None or i < self.limit):
            delay = self.started + i / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                if self._stopping:
                    break
            sent, key, value = self.make(i)
            self.h.partition_of[sent.rid] = sent.partition
            sent.t = time.monotonic()
            self.sends.append(sent)
            task = asyncio.create_task(self._send(sent, key, value))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            i += 1
        self.stopped = time.monotonic()

    async def _send(self, sent: Sent, key: bytes, value: bytes) -> None:
        assert self.h.producer is not None
        try:
            delivery = await self.h.producer.send(config.TOPIC_REQUESTS, value, key=key, partition=sent.partition)
            await delivery
            sent.acked = True
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the load
            sent.acked = False
            self.errors[type(exc).__name__] += 1

    async def done(self) -> None:
        """Until the sender stops by itself (``limit`` reached)."""
        if self._runner is not None:
            await self._runner

    async def stop(self) -> None:
        self._stopping = True
        await self.done()

    async def settle_sends(self, bound_s: float) -> None:
        """Wait (at most ``bound_s``) until the producer resolved every send; the rest stay unresolved."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=bound_s)

    def since(self, t: float) -> list[Sent]:
        return self.sends[bisect.bisect_left(self.sends, t, key=lambda s: s.t):]


@dataclass
class Options:
    rate: float = 300.0
    kills: int = 5
    outage_s: float = 60.0
    timeout_s: float = 5.0
    malformed: int = 20_000
    #: Kafka nodes of the dev stack: 3 runs broker_leader_kill too (a 3-node cluster, started if none runs)
    brokers: int = 1


@dataclass
class Window:
    """What one scenario did: its loads and extra fields."""

    loads: list[Load] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: measured once the audit table settled (the workers are done with the scenario's requests by then)
    after_settle: Callable[[], Awaitable[dict[str, Any]]] | None = None


class Harness:
    def __init__(self, cfg: config.Settings, opts: Options, run_id: str) -> None:
        from streams.client import PolicyClient
        from streams.devservices.services import DevStack

        self.cfg, self.opts, self.run = cfg, opts, run_id
        self.state_dir = Path(cfg.state_dir)
        self.stack = DevStack(self.state_dir, cfg)
        self.builder = PolicyClient(settings=cfg, reply_partition=REPLY_PARTITION, timeout_s=opts.timeout_s)
        self.replies: dict[str, list[Reply]] = defaultdict(list)
        self.recent: deque[tuple[float, str, str]] = deque(maxlen=50_000)  # (arrival, request id, worker)
        self.partition_of: dict[str, int] = {}
        self.workers: list[str] = []  # live workers of ours, in start order
        self.spawned = 0
        self.producer: Any = None
        self.reader: Any = None
        self._reading: asyncio.Task[None] | None = None
        self.n_parts = 0

    # ---- Kafka clients -----------------------------------------------------------------------------------
    async def start(self) -> None:
        from aiokafka import TopicPartition

        from streams.kafka import clients

        self.producer = await clients.start_producer(self.cfg, linger_ms=0, client_id="pdx-bench-faults")
        self.n_parts = len(await self.producer.partitions_for(config.TOPIC_REQUESTS))
        reply_parts = sorted(await self.producer.partitions_for(config.TOPIC_DECISIONS))
        self.reader = await clients.start_consumer(self.cfg, fetch_max_wait_ms=20, client_id="pdx-bench-faults")
        tps = [TopicPartition(config.TOPIC_DECISIONS, p) for p in reply_parts]
        self.reader.assign(tps)
        await self.reader.seek_to_end(*tps)
        for tp in tps:
            await self.reader.position(tp)
        self._reading = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reading
        for client in (self.reader, self.producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def _read(self) -> None:
        """Record every reply to this run's requests, on every partition of pdx.decisions."""
        while True:
            try:
                batch = await self.reader.getmany(timeout_ms=200)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the broker restarting: keep reading
                await asyncio.sleep(0.2)
                continue
            now = time.monotonic()
            for tp, msgs in batch.items():
                for m in msgs:
                    header = next((v for k, v in m.headers if k == "correlation_id"), None)
                    rid = (header or m.key or b"").decode("utf-8", "replace")
                    if not rid.startswith(self.run):
                        continue
                    try:
                        d = wire.decode_as("Decision", m.value)
                        reply = Reply(now, str(d["decision"]), str(d["worker_id"]), tp.partition,
                                      tuple(str(r["code"]) for r in d["reasons"]))
                    except wire.WireError:
                        reply = Reply(now, "<undecodable>", "", tp.partition, ())
                    self.replies[rid].append(reply)
                    self.recent.append((now, rid, reply.worker_id))

    def first_reply(self, rid: str) -> Reply | None:
        seen = self.replies.get(rid)
        return seen[0] if seen else None

    def answered_since(self, load: Load, t: float) -> list[tuple[int, float, float]]:
        out = []
        for s in load.since(t):
            r = self.first_reply(s.rid)
            if r is not None:
                out.append((s.partition, s.t, r.t))
        return out

    async def end_offsets(self, topics: Sequence[str]) -> int:
        """Sum of the end offsets of every partition of ``topics``."""
        from aiokafka import TopicPartition

        tps = [TopicPartition(t, p) for t in topics for p in (await self.producer.partitions_for(t)) or ()]
        return sum((await self.reader.end_offsets(tps)).values()) if tps else 0

    # ---- requests ----------------------------------------------------------------------------------------
    def valid_maker(self, prefix: str) -> Maker:
        def make(i: int) -> tuple[Sent, bytes, bytes]:
            rid = f"{prefix}v{i}"
            ident, action, resource, context = MIX[i % len(MIX)]
            request = self.builder.build_request(ident, action, resource, context, request_id=rid)
            return Sent(rid, i % self.n_parts, True), ident.encode(), wire.encode("AccessRequest", request.to_dict())

        return make

    def malformed_maker(self, prefix: str) -> Maker:
        def make(i: int) -> tuple[Sent, bytes, bytes]:
            rid = f"{prefix}m{i}"
            category = malformed_category(i)
            ident, action, resource, context = MIX[(i + i // 100) % len(MIX)]  # the oversized ones vary too
            request = self.builder.build_request(ident, action, resource, context, request_id=rid).to_dict()
            return Sent(rid, i % self.n_parts, False, category), ident.encode(), malformed_value(category, request, i)

        return make

    def load(self, prefix: str) -> Load:
        return Load(self, self.valid_maker(prefix), self.opts.rate).start()

    # ---- processes ---------------------------------------------------------------------------------------
    def worker_pid_file(self, name: str) -> Path:
        return self.state_dir / "workers" / f"{name}.pid"

    def spawn_worker(self) -> tuple[str, Path]:
        self.spawned += 1
        name = f"{WORKER_PREFIX}{self.spawned}"
        log = spawn_quiet_worker(self.state_dir, name)
        self.workers.append(name)
        return name, log

    def exited_workers(self) -> list[str]:
        from streams.devservices import procs

        gone = [w for w in self.workers if procs.read_pid(self.worker_pid_file(w)) is None]
        self.workers = [w for w in self.workers if w not in gone]
        return gone

    def sink_pid_file(self) -> Path:
        from streams.demo.runner import AUDIT_SINK

        return self.state_dir / "workers" / f"{AUDIT_SINK}.pid"

    def spawn_sink(self) -> None:
        from streams.demo.runner import AUDIT_SINK
        from streams.devservices.workers import spawn_sink

        spawn_sink(self.state_dir, AUDIT_SINK)

    async def ensure_ready(self) -> list[str]:
        """Kafka, ClickHouse, the sink and two workers up, and every request partition answered."""
        from streams.devservices import procs
        from streams.devservices.workers import wait_until_ready

        notes: list[str] = []
        for service in ("kafka", "clickhouse"):
            if self.service_down(service):
                notes.append(f"{service} was not running: started it")
                await asyncio.to_thread(self.stack.start_service, service)
        if procs.read_pid(self.sink_pid_file()) is None:
            notes.append("the audit sink was not running: started it")
            self.spawn_sink()
        notes += [f"worker {w} had exited: replaced it" for w in self.exited_workers()]
        new = [self.spawn_worker() for _ in range(WORKERS - len(self.workers))]
        for name, log in new:
            say(f"bench faults: waiting for worker {name}")
            await asyncio.to_thread(wait_until_ready, log, READY_BOUND_S)
        await self.probe()
        return notes

    async def probe(self) -> float:
        """Send one request to every request partition until a round is answered in full (bounded)."""
        start = time.monotonic()
        for k in itertools.count():
            make = self.valid_maker(f"{self.run}-probe-{k}-")
            rids = []
            for p in range(self.n_parts):
                sent, key, value = make(p)
                rids.append(sent.rid)
                with contextlib.suppress(Exception):
                    await self.producer.send(config.TOPIC_REQUESTS, value, key=key, partition=p)
            round_end = time.monotonic() + 3.0
            while time.monotonic() < round_end and not all(r in self.replies for r in rids):
                await asyncio.sleep(0.05)
            if all(r in self.replies for r in rids):
                return time.monotonic() - start
            if time.monotonic() - start > PROBE_BOUND_S:
                break
        raise UserError(f"the stack did not answer a request on every partition within {PROBE_BOUND_S:.0f}s")

    async def wait_stable(self) -> tuple[bool, dict[int, set[str]]]:
        """Until the group is stable (:func:`group_stable` twice in a row, 1 s apart), at most STABLE_BOUND_S."""
        start = time.monotonic()
        streak = 0
        while True:
            await asyncio.sleep(1.0)
            since = time.monotonic() - STABLE_WINDOW_S
            recent = [(self.partition_of[rid], t, w) for t, rid, w in list(self.recent)
                      if t >= since and rid in self.partition_of]
            owners = partition_owners(recent, since)
            streak = streak + 1 if group_stable(owners, self.workers, self.n_parts) else 0
            if streak >= 2:
                return True, owners
            if time.monotonic() - start > STABLE_BOUND_S:
                return False, owners

    # ---- ClickHouse ----------------------------------------------------------------------------------------
    def settle(self, prefix: str, expected: int) -> tuple[int, float, bool]:
        """Poll until ``expected`` distinct request ids with ``prefix`` are audited, at most SETTLE_BOUND_S or
        SETTLE_STALL_S without progress: (count, seconds, reached). Blocking."""
        from streams.audit.store import connect

        sql = (f"SELECT uniqExact(request_id) FROM {config.CLICKHOUSE_DATABASE}.{config.AUDIT_TABLE} "
               "WHERE startsWith(request_id, {p:String})")
        start = last_change = time.monotonic()
        last = -1
        client = None
        try:
            while True:
                try:
                    client = client or connect(self.cfg.clickhouse_url, cfg=self.cfg)
                    n = int(client.query(sql, parameters={"p": prefix}).result_rows[0][0])
                except Exception:  # noqa: BLE001 - ClickHouse still starting: keep polling
                    client, n = None, last
                now = time.monotonic()
                if n >= expected:
                    return n, now - start, True
                if n != last:
                    last, last_change = n, now
                if now - start >= SETTLE_BOUND_S or now - last_change >= SETTLE_STALL_S:
                    return max(n, 0), now - start, False
                time.sleep(0.5)
        finally:
            if client is not None:
                client.close()

    def audit_rows(self, prefix: str) -> list[tuple[str, str]]:
        """(request_id, decision) of every row FINAL with ``prefix``. Blocking."""
        from streams.audit.store import connect

        client = connect(self.cfg.clickhouse_url, cfg=self.cfg)
        try:
            sql = (f"SELECT request_id, decision FROM {config.CLICKHOUSE_DATABASE}.{config.AUDIT_TABLE} FINAL "
                   "WHERE startsWith(request_id, {p:String})")
            return [(str(r[0]), str(r[1])) for r in client.query(sql, parameters={"p": prefix}).result_rows]
        finally:
            client.close()

    # ---- one scenario --------------------------------------------------------------------------------------
    async def scenario(self, name: str, body: Callable[[str], Awaitable[Window]]) -> dict[str, Any]:
        say(f"bench faults: scenario {name}")
        try:
            notes = await self.ensure_ready()
        except PdxError as exc:
            return {"name": name, "error": str(exc)}
        prefix = f"{self.run}-{name}-"
        start = time.monotonic()
        try:
            window = await body(prefix)
        except PdxError as exc:
            return {"name": name, "error": str(exc), "seconds": round(time.monotonic() - start, 1)}
        say(f"bench faults: {name}: load stopped; waiting {self.opts.timeout_s + 1:g}s for the last replies")
        await asyncio.sleep(self.opts.timeout_s + 1)
        for load in window.loads:
            await load.settle_sends(SEND_ACK_BOUND_S)
        sends = [s for load in window.loads for s in load.sends]
        must_audit = sum(1 for s in sends if s.acked and (s.valid or EXPECTED[s.category].audited))
        say(f"bench faults: {name}: waiting for {must_audit} audit rows")
        _, settle_s, settled = await asyncio.to_thread(self.settle, prefix, must_audit)
        rows = await asyncio.to_thread(self.audit_rows, prefix)
        result = self.summarize(name, window, sends, rows)
        if window.after_settle is not None:
            result.update(await window.after_settle())
        exited = self.exited_workers()
        from streams.devservices import procs

        result.update(
            settle_s=round(settle_s, 1),
            settled=settled,
            seconds=round(time.monotonic() - start, 1),
            workers_exited=exited,
            sink_exited=procs.read_pid(self.sink_pid_file()) is None,
            notes=notes,
        )
        say(f"bench faults: {name}: sent {result['sent']}, answered {result['answered']}, pdp_timeouts "
            f"{result['pdp_timeouts']}, conflicting {result['conflicting']}, duplicates {result['duplicates']}, "
            f"lost {result['lost']} ({result['seconds']}s)")
        return result

    def summarize(self, name: str, window: Window, sends: Sequence[Sent],
                  rows: Sequence[tuple[str, str]]) -> dict[str, Any]:
        valid = [s for s in sends if s.valid]
        errors: Counter[str] = Counter()
        for load in window.loads:
            errors.update(load.errors)
        replies = {s.rid: self.replies[s.rid] for s in sends if s.rid in self.replies}
        outcome = reply_outcomes({rid: [r.decision for r in rs] for rid, rs in replies.items()})
        first = {rid: rs[0] for rid, rs in replies.items()}
        audited = {rid for rid, _ in rows}
        lost = lost_ids((s.rid for s in valid if s.acked), audited)
        sent_at = {s.rid: s.t for s in sends}
        load_s = max((load.stopped - load.started for load in window.loads), default=0.0)
        result: dict[str, Any] = {
            "name": name,
            "seconds": None,
            "load_s": round(load_s, 1),
            "offered_rps": self.opts.rate,
            "attempted": len(sends),
            "sent": sum(1 for s in sends if s.acked),
            "send_failed": sum(1 for s in sends if not s.acked),
            "valid_sent": sum(1 for s in valid if s.acked),
            "requests": len(valid),
            "malformed_sent": sum(1 for s in sends if s.acked and not s.valid),
            **(times := timeliness(((s.t, first[s.rid].t if s.rid in first else None) for s in valid),
                                   self.opts.timeout_s)),
            "failed_closed": times["pdp_timeouts"],
            "caller_outage_s": caller_outage(
                (s.partition, s.t, s.rid in first and first[s.rid].t - s.t <= self.opts.timeout_s) for s in valid),
            "conflicting": outcome.conflicting,
            "conflicting_examples": [
                {"request_id": rid, "replies": [
                    {"decision": r.decision, "reason_codes": list(r.codes), "worker_id": r.worker_id,
                     "after_send_s": round(r.t - sent_at[rid], 3)} for r in replies[rid]]}
                for rid in outcome.conflicting_ids[:5]
            ],
            "duplicates": outcome.duplicates,
            "redecided": sum(1 for rs in replies.values() if len({r.worker_id for r in rs}) > 1),
            "misrouted": sum(1 for rs in replies.values() for r in rs if r.reply_partition != REPLY_PARTITION),
            "audit_rows": len(rows),
            "audit_request_ids": len(audited),
            **audit_consistency({rid: r.decision for rid, r in first.items()}, rows),
            "lost": len(lost),
            "lost_examples": lost[:5],
            "send_errors": dict(errors),
            **window.extra,
        }
        if any(not s.valid for s in sends):
            result["malformed"] = malformed_report(
                (s.category, s.rid in replies, [c for r in replies.get(s.rid, ()) for c in r.codes], s.rid in audited)
                for s in sends if s.acked and not s.valid)
            expected_dlq = sum(1 for s in sends if s.acked and not s.valid and EXPECTED[s.category].dead_lettered)
            result["dlq_expected"] = expected_dlq
        return result

    # ---- the scenarios -------------------------------------------------------------------------------------
    async def worker_kill(self, prefix: str) -> Window:
        load = self.load(prefix)
        try:
            return await self._kills(load)
        finally:
            await load.stop()

    async def _kills(self, load: Load) -> Window:
        from streams.devservices import procs
        from streams.devservices.workers import wait_until_ready

        kills: list[dict[str, Any]] = []
        for k in range(self.opts.kills):
            stable, owners = await self.wait_stable()
            victim, parts = choose_victim(owners, self.workers)
            self.workers.remove(victim)
            kill_t = time.monotonic()
            procs.kill_now(self.worker_pid_file(victim))
            replacement, log = self.spawn_worker()
            ready: asyncio.Future[None] = asyncio.ensure_future(asyncio.to_thread(wait_until_ready, log, READY_BOUND_S))
            say(f"bench faults: kill {k + 1}/{self.opts.kills}: SIGKILL {victim} (partitions {parts}); "
                f"started {replacement}")
            while True:
                per = takeover_by_partition(kill_t, parts, self.answered_since(load, kill_t))
                if takeover_of(per) is not None or not parts or time.monotonic() - kill_t > TAKEOVER_BOUND_S:
                    break
                await asyncio.sleep(0.05)
            ready_s: float | None = None
            try:
                await ready
                ready_s = round(time.monotonic() - kill_t, 2)
            except PdxError as exc:
                say(f"bench faults: replacement {replacement} did not get ready: {exc}")
            takeover = takeover_of(per)
            say(f"bench faults: kill {k + 1}: takeover {takeover}s {per}; replacement ready after {ready_s}s")
            kills.append({"victim": victim, "victim_partitions": parts, "stable_before_kill": stable,
                          "at_s": round(kill_t - load.started, 2), "takeover_s": takeover,
                          "partition_takeover_s": {str(p): v for p, v in per.items()},
                          "replacement": replacement, "replacement_ready_s": ready_s})
        await asyncio.sleep(AFTER_S)
        await load.stop()
        takeovers = [k["takeover_s"] for k in kills]
        return Window([load], {"takeover_s": takeovers, **takeover_summary(takeovers), "kills": kills})

    async def _under_load(self, prefix: str, fault: Callable[[], Awaitable[dict[str, Any]]]) -> Window:
        """BASELINE_S of load, the fault, AFTER_S of load; adds ``recovery_s`` from the end of the fault (the
        service back)."""
        load = self.load(prefix)
        try:
            await asyncio.sleep(BASELINE_S)
            extra = await fault()
            back_t = time.monotonic()
            await asyncio.sleep(AFTER_S)
        finally:
            await load.stop()
        per = takeover_by_partition(back_t, range(self.n_parts), self.answered_since(load, back_t))
        return Window([load], {**extra, "recovery_s": takeover_of(per)})

    async def sink_kill(self, prefix: str) -> Window:
        from streams.devservices import procs

        async def fault() -> dict[str, Any]:
            t = time.monotonic()
            procs.kill_now(self.sink_pid_file())
            say("bench faults: SIGKILL the audit sink")
            await asyncio.sleep(SINK_DOWN_S)
            self.spawn_sink()
            say("bench faults: audit sink started again")
            return {"sink_down_s": round(time.monotonic() - t, 1)}

        return await self._under_load(prefix, fault)

    async def _outage(self, service: str, down_s: float) -> dict[str, Any]:
        t = time.monotonic()
        say(f"bench faults: stopping {service}")
        await asyncio.to_thread(self.stack.stop_service, service)
        stopped = time.monotonic()
        if down_s > 0:
            say(f"bench faults: {service} down for {down_s:g}s")
            await asyncio.sleep(down_s)
        await asyncio.to_thread(self.stack.start_service, service)
        say(f"bench faults: {service} is back")
        return {f"{'broker' if service == 'kafka' else service}_stop_s": round(stopped - t, 1),
                f"{'broker' if service == 'kafka' else service}_down_s": round(time.monotonic() - t, 1)}

    async def broker_restart(self, prefix: str) -> Window:
        return await self._under_load(prefix, lambda: self._outage("kafka", 0.0))

    def service_down(self, service: str) -> bool:
        """Whether a service (for Kafka: any node of the cluster) is not running."""
        if service == "kafka":
            return any(pid is None for pid in self.stack.kafka_pids().values())
        return self.stack.running_pid(service) is None

    async def request_partitions(self) -> list[dict[str, Any]]:
        """The partitions of pdx.requests (leader, replicas, isr) from a fresh metadata request."""
        from streams.kafka import clients

        admin = clients.admin(self.cfg)
        await admin.start()
        try:
            [topic] = await admin.describe_topics([config.TOPIC_REQUESTS])
            return list(topic["partitions"])
        finally:
            await admin.close()

    async def request_leaders(self) -> dict[int, int]:
        """{pdx.requests partition: its leader broker}."""
        return {int(p["partition"]): int(p["leader"]) for p in await self.request_partitions()}

    async def broker_leader_kill(self, prefix: str) -> Window:
        replicas = min(len(p["replicas"]) for p in await self.request_partitions())
        if replicas < 2:
            raise UserError(f"{config.TOPIC_REQUESTS} has {replicas} replica(s): killing its leader would only show "
                            "an outage. Run on a replicated cluster (`pdx dev down`, `pdx dev up --brokers 3`, "
                            "`pdx topics create`)")
        leaders = await self.request_leaders()
        victim = leader_victim(leaders)

        async def fault() -> dict[str, Any]:
            await asyncio.to_thread(self.stack.kill_broker, victim)
            say(f"bench faults: SIGKILL broker {victim} (leader of {config.TOPIC_REQUESTS} partitions "
                f"{sorted(p for p, b in leaders.items() if b == victim)})")
            return {}

        window = await self._under_load(prefix, fault)
        after = await self.request_leaders()
        t = time.monotonic()
        await asyncio.to_thread(self.stack.start_service, "kafka")
        say(f"bench faults: broker {victim} started again")
        parts = sorted(p for p, b in leaders.items() if b == victim)
        window.extra.update(victim_broker=victim, victim_partitions=parts,
                            leaders_before={str(p): b for p, b in sorted(leaders.items())},
                            leaders_after={str(p): b for p, b in sorted(after.items())},
                            replication=replicas, broker_back_s=round(time.monotonic() - t, 1))
        return window

    async def clickhouse_outage(self, prefix: str) -> Window:
        return await self._under_load(prefix, lambda: self._outage("clickhouse", self.opts.outage_s))

    async def malformed(self, prefix: str) -> Window:
        protected = config.STATE_TOPICS  # the signed state: policies, inventory, approvals, issuers, delegations
        dlq_before = await self.end_offsets([config.TOPIC_DLQ])
        protected_before = await self.end_offsets(protected)
        bad = Load(self, self.malformed_maker(prefix), MALFORMED_RATE, limit=self.opts.malformed).start()
        good = self.load(prefix)
        try:
            await bad.done()
        finally:
            await bad.stop()
            await good.stop()

        async def after_settle() -> dict[str, Any]:
            return {"dlq_records": await self.end_offsets([config.TOPIC_DLQ]) - dlq_before,
                    "protected_topic_writes": await self.end_offsets(protected) - protected_before}

        return Window([good, bad], {"malformed_rps": MALFORMED_RATE}, after_settle)

    async def stop_our_workers(self) -> None:
        from streams.devservices import procs

        for name in list(self.workers):
            await asyncio.to_thread(procs.stop, self.worker_pid_file(name))
        self.workers.clear()


def _prepare(cfg: config.Settings, brokers: int = 1) -> config.Settings:
    """The stack as the other stream benchmarks prepare it, without their worker: no worker but ours may be in
    the group (it would own partitions), and the one audit sink running. ``brokers`` > 1: Kafka must be (or is
    started as) a cluster of that many nodes, and every process this benchmark starts bootstraps from all of
    them (a worker started while node 1 is dead still finds the cluster). Returns the settings to run with:
    ``cfg``, bootstrapping from every node."""
    import os

    from streams.demo.runner import AUDIT_SINK, prepare_stack
    from streams.devservices import procs
    from streams.devservices.services import DevStack, Ports
    from streams.devservices.workers import spawn_sink

    if brokers > 1:
        ports = DevStack(cfg.state_dir, cfg).up(("kafka",), Ports.from_settings(cfg), brokers=brokers)
        os.environ.update({config.ENV_KAFKA_BOOTSTRAP: ports.bootstrap})  # for the processes we start
        cfg = cfg.replace(kafka_bootstrap=ports.bootstrap)
    prepare_stack(cfg, start_worker=False)
    state_dir = cfg.state_dir
    stopped = stop_workers(state_dir)
    if stopped:
        say(f"bench faults: stopped {', '.join(stopped)} (only the benchmark's workers may be in the group)")
    if procs.read_pid(state_dir / "workers" / f"{AUDIT_SINK}.pid") is None:
        spawn_sink(state_dir, AUDIT_SINK)
    return cfg


def scenario_names(only: Sequence[str] | None, brokers: int = 1) -> list[str]:
    """The scenarios to run, in :data:`SCENARIOS` order (by default all, :data:`CLUSTER_SCENARIOS` only with
    ``brokers`` >= 3); UserError for an unknown name or a cluster scenario without a cluster."""
    cluster = brokers >= CLUSTER_BROKERS
    wanted = set(only or (s for s in SCENARIOS if cluster or s not in CLUSTER_SCENARIOS))
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise UserError(f"unknown fault scenario {', '.join(sorted(unknown))}: choose from {', '.join(SCENARIOS)}")
    needs_cluster = sorted(wanted & set(CLUSTER_SCENARIOS))
    if needs_cluster and not cluster:
        raise UserError(f"{', '.join(needs_cluster)} needs a {CLUSTER_BROKERS}-broker cluster: run with "
                        f"--brokers {CLUSTER_BROKERS}")
    return [s for s in SCENARIOS if s in wanted]


async def _run(cfg: config.Settings, names: Sequence[str], opts: Options) -> dict[str, Any]:
    run_id = f"faults-{uuid.uuid4().hex[:8]}"
    harness = Harness(cfg, opts, run_id)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    await harness.start()
    try:
        for name in names:
            results.append(await harness.scenario(name, getattr(harness, name)))
    finally:
        await harness.stop_our_workers()
        await harness.stop()
        for service in ("kafka", "clickhouse"):  # never leave a service down (an interrupted outage or kill)
            if harness.service_down(service):
                with contextlib.suppress(PdxError):
                    await asyncio.to_thread(harness.stack.start_service, service)
    kill = next((r for r in results if r["name"] == "worker_kill" and "takeover_s" in r), None)
    return {
        "takeover_p50_s": kill["takeover_p50_s"] if kill else None,
        "takeover_p99_s": kill["takeover_p99_s"] if kill else None,
        "takeover_s": kill["takeover_s"] if kill else [],
        "violations": violations(results),
        "run_id": run_id,
        "settings": {"rate_rps": opts.rate, "kills": opts.kills, "outage_s": opts.outage_s,
                     "timeout_s": opts.timeout_s, "malformed": opts.malformed, "malformed_rps": MALFORMED_RATE,
                     "workers": WORKERS, "brokers": opts.brokers, "request_partitions": harness.n_parts,
                     "reply": f"{config.TOPIC_DECISIONS}[{REPLY_PARTITION}]", "baseline_s": BASELINE_S,
                     "after_s": AFTER_S, "settle_bound_s": SETTLE_BOUND_S, "takeover_bound_s": TAKEOVER_BOUND_S},
        "seconds": round(time.monotonic() - started, 1),
        "scenarios": results,
    }


def run_faults(cfg: config.Settings, only: Sequence[str] | None = None, opts: Options | None = None) -> dict[str, Any]:
    """Prepare the local stack and run the chosen fault scenarios (all by default); see the module docstring."""
    opts = opts or Options()
    names = scenario_names(only, opts.brokers)
    if opts.rate <= 0 or opts.kills < 1 or opts.outage_s < 0 or opts.timeout_s <= 0 or opts.malformed < 1:
        raise UserError("--rate and --timeout must be positive, --kills and --malformed at least 1, --outage-s >= 0")
    cfg = _prepare(cfg, opts.brokers)
    return asyncio.run(_run(cfg, names, opts))
