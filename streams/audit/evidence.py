"""``pdx report evidence``: which recorded decisions exercised which control, for an auditor.

A decision *exercised* a control when a rule of a policy carrying that control (``controls:`` in the policy)
is in its ``matched_rules`` (an enforced rule that decided it), or in its ``monitor`` outcomes (a monitor-mode
rule that would have decided it; counted separately, never as an outcome). Per control the report gives the
policies and rules implementing it with their bundle versions and signers, the decisions by outcome, example
request ids, the exceptions (monitor-mode hits; decisions granted through approvals, with the approver; allows
of identities whose oldest active credential is older than the credential-hygiene threshold) and, from a control
catalogue (``controls.yaml`` beside this module, or ``--catalogue FILE``), the controls no rule implements (gaps).

Design: where each fact comes from.

* **Every figure comes from ClickHouse.** The policy -> controls metadata is not in the audit table, only each
  decision's ``bundle_version`` and rule ids. So the report first builds, in Python, a small map
  ``"<bundle_version>\\n<rule_id>" -> [control ids]`` for every bundle version seen in the window, and sends it
  as two array *query parameters* (``mapFromArrays``) with each query; ClickHouse does the counting, the
  distinct-per-decision logic (a decision matching two rules of one control counts once) and the examples.
  Nothing is counted in Python, and no user value is spliced into SQL (streams/audit/queries.py's rules).
* **Bundle content and signer come from the signed topic.** ``pdx.policies`` holds every bundle not yet
  compacted away (key ``current``). Each record is verified exactly as a worker does (Ed25519 over kind, key,
  value and signing time, with the keys trusted for ``policy``; the content must hash to its version). A record
  that fails is listed under ``policy_source.refused`` and never used. Signer = the ``pdx-key-id`` header.
* **When Kafka cannot be reached** (or holds no verified bundle), the local policy directory is used, with the
  signer ``unsigned (local policies/)``; the report says which source it used and why.
* **Versions whose content is gone** (compacted away, segment.ms is an hour): a local directory hashing to the
  same version *is* that content (the version is the sha256 of the canonical content), so it is used (signer
  unknown). Otherwise the decisions of that version are attributed by rule id with the newest known bundle and
  the bundle is listed as ``content: inferred`` with ``mapped_with``: visible, never silent.

Approvals: the audit column ``approvals`` (sql/008) lists the approvals a decision relied on; when the table does
not have it yet, that exception is reported as not available (``notes``) rather than as zero.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any

import yaml

from streams import config
from streams.audit.queries import MONTH_FROM, MONTH_TO, T64, Audit, ch_time
from streams.contracts import signing, wire
from streams.errors import UserError
from streams.model.durations import parse_duration_s

CATALOGUE = Path(__file__).resolve().parent / "controls.yaml"
TEMPLATE = Path(__file__).resolve().parent / "evidence_template.html"
LOCAL_SIGNER = "unsigned (local policies/)"
HASH_MATCH_SIGNER = "unknown (content from local policies/, matched by version hash)"
DEFAULT_STALE_DAYS = 90.0
OUTCOMES = ("allow", "deny", "step_up")
SEP = "\n"  # between bundle version and rule id in the map keys (neither can contain it: hex / validated ids)


# ---- the control catalogue ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    framework: str
    superseded_by: str | None = None


@dataclass
class Framework:
    id: str
    title: str
    prefix: str
    controls: list[str] = field(default_factory=list)


@dataclass
class Catalogue:
    path: str
    frameworks: list[Framework]
    controls: dict[str, Control]

    def framework_of(self, control_id: str) -> str:
        if control_id in self.controls:
            return self.controls[control_id].framework
        for fw in self.frameworks:
            if fw.prefix and control_id.startswith(fw.prefix):
                return fw.id
        return "other"


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """The control catalogue in ``path`` (default: the shipped controls.yaml); UserError naming what is wrong."""
    p = Path(path) if path is not None else CATALOGUE
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read control catalogue {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"control catalogue {p} is not valid YAML: {exc}") from None
    return catalogue_from_doc(doc, str(p))


def catalogue_from_doc(doc: Any, source: str) -> Catalogue:
    shape = "expected {format: 1, frameworks: [{id, title, prefix, controls: [{id, title}]}]}"
    if not isinstance(doc, dict) or not isinstance(doc.get("frameworks"), list):
        raise UserError(f"control catalogue {source}: {shape}")
    frameworks: list[Framework] = []
    controls: dict[str, Control] = {}
    for i, fw in enumerate(doc["frameworks"]):
        if not isinstance(fw, dict) or not isinstance(fw.get("id"), str) or not isinstance(fw.get("controls"), list):
            raise UserError(f"control catalogue {source}: framework #{i + 1} needs id and controls; {shape}")
        f = Framework(fw["id"], str(fw.get("title") or fw["id"]), str(fw.get("prefix") or ""))
        for j, c in enumerate(fw["controls"]):
            if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not c["id"]:
                raise UserError(f"control catalogue {source}: control #{j + 1} of {f.id} needs an id; {shape}")
            if c["id"] in controls:
                raise UserError(f"control catalogue {source}: control {c['id']!r} is listed twice")
            sup = c.get("superseded_by")
            controls[c["id"]] = Control(c["id"], str(c.get("title") or ""), f.id, str(sup) if sup else None)
            f.controls.append(c["id"])
        frameworks.append(f)
    return Catalogue(source, frameworks, controls)


# ---- policy bundles: content, version, signer ------------------------------------------------------------------


@dataclass
class BundleInfo:
    version: str
    source: str  # "pdx.policies" | "local"
    signer: str
    signed_at: datetime | None = None
    published_by: str = ""
    serial: int | None = None
    created_at: datetime | None = None
    policies: list[dict[str, Any]] = field(default_factory=list)

    def rule_controls(self) -> dict[str, list[str]]:
        return {r["id"]: list(p.get("controls") or []) for p in self.policies for r in p.get("rules") or []}


@dataclass
class BundleSet:
    kind: str  # "kafka" | "local"
    note: str
    bundles: dict[str, BundleInfo]
    current: str | None
    refused: list[str] = field(default_factory=list)
    local: BundleInfo | None = None  # the local directory's bundle, when it could be read


def _policies_of(content: str) -> list[dict[str, Any]]:
    """The policies of a bundle's canonical content, validated like the loader does."""
    from streams.policy import validate_content_obj

    ps, problems = validate_content_obj(json.loads(content))
    if ps is None:
        raise ValueError("; ".join(str(p) for p in problems[:3]) or "invalid bundle content")
    return ps.policies


def bundles_from_records(
    records: Iterable[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]],
    trust: signing.TrustedKeys,
) -> tuple[dict[str, BundleInfo], str | None, list[str]]:
    """Verified bundles of the policy topic's (key, value, headers) records: (by version, current, refused).

    The same checks as a worker (streams/worker/state.py): a trusted signature for ``policy`` records, content
    that validates and hashes to its version. The current bundle is the verified one with the highest serial."""
    from streams.policy import bundle_version

    found: dict[str, BundleInfo] = {}
    refused: list[str] = []
    current: tuple[int, str] | None = None
    for n, (key, value, headers) in enumerate(records):
        if value is None:
            continue
        try:
            verified = trust.verify(signing.POLICY, key, value, headers)
            bundle = wire.decode_as("PolicyBundle", value)
            if bundle_version(bundle["content"]) != bundle["version"]:
                raise ValueError(f"content does not hash to its version {bundle['version'][:12]}")
            policies = _policies_of(bundle["content"])
        except (signing.SignatureError, ValueError) as exc:  # WireError is a ValueError
            refused.append(f"record #{n + 1}: {str(exc)[:200]}")
            continue
        serial = int(bundle.get("serial") or 0)
        info = BundleInfo(
            version=bundle["version"],
            source=config.TOPIC_POLICIES,
            signer=verified.key_id,
            signed_at=datetime.fromtimestamp(verified.signed_at_ms / 1000, UTC),
            published_by=str(bundle.get("published_by") or ""),
            serial=serial,
            created_at=bundle.get("created_at"),
            policies=policies,
        )
        found[info.version] = info  # a republished version: the latest publication's signer
        if current is None or serial >= current[0]:
            current = (serial, info.version)
    return found, (current[1] if current else None), refused


async def read_policy_records(
    cfg: config.Settings, timeout_s: float
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """Every record still on the policy topic (all partitions, oldest first)."""
    from streams.kafka.state import all_records

    async with asyncio.timeout(timeout_s):  # connecting too: a Kafka that hangs must not hang the report
        return await all_records(cfg, config.TOPIC_POLICIES, timeout_s)


def bundle_from_dir(path: str | Path) -> BundleInfo:
    from streams.policy import load_policy_dir

    ps = load_policy_dir(path)
    return BundleInfo(version=ps.version, source="local", signer=LOCAL_SIGNER, policies=ps.policies)


def load_bundles(
    cfg: config.Settings | None,
    *,
    source: str = "auto",
    policies_dir: str | Path = config.POLICIES_DIR,
    timeout_s: float = 15.0,
) -> BundleSet:
    """The bundles to attribute decisions with: from ``pdx.policies`` (verified), else the local directory.

    ``source``: ``kafka`` (fail when Kafka cannot be read), ``local`` (never ask Kafka), ``auto`` (Kafka, falling
    back to the local directory, saying why)."""
    if source not in ("auto", "kafka", "local"):
        raise UserError(f"--policy-source must be auto, kafka or local, not {source!r}")
    local: BundleInfo | None = None
    local_error = ""
    try:
        local = bundle_from_dir(policies_dir)
    except UserError as exc:  # PolicyValidationError, a missing directory: only a problem if it is needed
        local_error = f"{policies_dir}: {str(exc).splitlines()[0][:200]}"
    why = "--policy-source local"
    if source != "local":
        if cfg is None:
            raise ValueError("load_bundles: reading the policies topic needs the Settings (cfg)")
        try:
            records = asyncio.run(read_policy_records(cfg, timeout_s))
        except (UserError, TimeoutError, OSError) as exc:
            if source == "kafka":
                raise UserError(f"cannot read {config.TOPIC_POLICIES} from {cfg.kafka_bootstrap}: {exc}") from None
            why = f"Kafka not reachable at {cfg.kafka_bootstrap} ({str(exc)[:160] or type(exc).__name__})"
        else:
            found, current, refused = bundles_from_records(records, signing.trusted_keys(cfg))
            if found:
                note = f"signed bundles on {config.TOPIC_POLICIES} ({len(found)} verified"
                note += f", {len(refused)} refused)" if refused else ")"
                return BundleSet("kafka", note, found, current, refused, local)
            if source == "kafka":
                raise UserError(
                    f"no verified policy bundle on {config.TOPIC_POLICIES} ({len(refused)} refused: "
                    f"{'; '.join(refused[:2]) or 'the topic is empty'}); publish with `pdx policy publish`"
                )
            why = f"no verified bundle on {config.TOPIC_POLICIES} ({len(records)} records, {len(refused)} refused)"
            if local is not None:
                return BundleSet("local", f"{why}; using {policies_dir} ({LOCAL_SIGNER})",
                                 {local.version: local}, local.version, refused, local)
    if local is None:
        raise UserError(f"no policy bundle to read controls from: {why}, and the local policies failed: "
                        f"{local_error}; pass --policies DIR or make Kafka reachable")
    return BundleSet("local", f"{why}; using {policies_dir} ({LOCAL_SIGNER})", {local.version: local},
                     local.version, [], local)


def stale_threshold(bundle: BundleInfo | None) -> tuple[float, str]:
    """(days, where from): the lowest ``identity.credential_age_days`` gt/gte operand in the bundle's rules,
    preferring the credential-hygiene policy; 90 days when no rule states one."""

    def leaves(node: Any) -> Iterable[tuple[str, Any]]:
        if isinstance(node, list):
            for n in node:
                yield from leaves(n)
        elif isinstance(node, dict):
            for k, v in node.items():
                if k == "identity.credential_age_days" and isinstance(v, dict):
                    yield from ((op, operand) for op, operand in v.items() if op in ("gt", "gte"))
                else:
                    yield from leaves(v)

    best: tuple[int, float, str] | None = None
    for p in (bundle.policies if bundle else []):
        for r in p.get("rules") or []:
            for _op, operand in leaves(r.get("when")):
                try:
                    days = float(operand) if isinstance(operand, (int, float)) else parse_duration_s(operand) / 86400
                except (TypeError, ValueError):
                    continue
                rank = 0 if p.get("name") == "credential-hygiene" else 1
                cand = (rank, days, f"{p.get('name')}/{r['id']}")
                if best is None or cand[:2] < best[:2]:
                    best = cand
    if best is None:
        return DEFAULT_STALE_DAYS, f"default ({DEFAULT_STALE_DAYS:g} days: no rule tests identity.credential_age_days)"
    return best[1], best[2]


# ---- attribution map -----------------------------------------------------------------------------------------


@dataclass
class Attribution:
    keys: list[str]
    controls: list[list[str]]
    #: version -> {"content": "known"|"inferred"|"none", "mapped_with": version, "source", "signer"}
    versions: dict[str, dict[str, Any]]
    #: the bundles whose content implements controls in this report (versions in the window + the current one)
    used: list[BundleInfo]


def attribution(bundles: BundleSet, versions: Iterable[str]) -> Attribution:
    """The (bundle_version, rule) -> controls map for the versions seen in the window (pure)."""
    known = dict(bundles.bundles)
    if bundles.local is not None and bundles.local.version not in known:
        local = bundles.local
        known[local.version] = BundleInfo(local.version, "local", HASH_MATCH_SIGNER if bundles.kind == "kafka"
                                          else LOCAL_SIGNER, policies=local.policies)
    fallback = bundles.bundles.get(bundles.current or "") or bundles.local
    keys: list[str] = []
    controls: list[list[str]] = []
    info: dict[str, dict[str, Any]] = {}
    used: dict[str, BundleInfo] = {}
    if bundles.current and bundles.current in bundles.bundles:
        used[bundles.current] = bundles.bundles[bundles.current]
    for v in sorted(set(versions)):
        if not v:
            info[v] = {"content": "none", "mapped_with": None, "source": None, "signer": None}
            continue
        b = known.get(v)
        if b is not None:
            info[v] = {"content": "known", "mapped_with": v, "source": b.source, "signer": b.signer}
            used[v] = b
        elif fallback is not None:
            b = fallback
            info[v] = {"content": "inferred", "mapped_with": b.version, "source": None, "signer": None}
        else:  # pragma: no cover - load_bundles always returns one
            info[v] = {"content": "none", "mapped_with": None, "source": None, "signer": None}
            continue
        for rule, cs in b.rule_controls().items():
            if cs:
                keys.append(f"{v}{SEP}{rule}")
                controls.append(cs)
    return Attribution(keys, controls, info, list(used.values()))


# ---- queries --------------------------------------------------------------------------------------------------

CMAP = "mapFromArrays({map_keys:Array(String)}, {map_controls:Array(Array(String))})"
WINDOW = (
    f"decided_at >= {{since:{T64}}} AND decided_at < {{until:{T64}}} AND {MONTH_FROM} AND {MONTH_TO}"
)
ENFORCED = f"arrayDistinct(arrayFlatten(arrayMap(r -> {CMAP}[concat(bundle_version, '{SEP}', r)], matched_rules)))"
MONITORED = (
    f"arrayDistinct(arrayFlatten(arrayMap(x -> {CMAP}[concat(bundle_version, '{SEP}', tupleElement(x, 'rule'))], "
    "monitor)))"
)


def has_column(audit: Audit, name: str) -> bool:
    table = audit.table.split(".", 1)[1]
    rows = audit.query(
        "SELECT count() AS n FROM system.columns WHERE database = {db:String} AND table = {t:String} "
        "AND name = {c:String}",
        {"db": audit.db, "t": table, "c": name},
    )
    return bool(rows and int(rows[0]["n"]))


def _params(since: datetime, until: datetime, att: Attribution, **more: Any) -> dict[str, Any]:
    return {"since": ch_time(since), "until": ch_time(until), "map_keys": att.keys, "map_controls": att.controls,
            **more}


def versions_in_window(audit: Audit, since: datetime, until: datetime) -> list[dict[str, Any]]:
    return audit.query(
        f"""SELECT bundle_version, count() AS decisions, countIf(decision = 'allow') AS allow,
                   countIf(decision = 'deny') AS deny, countIf(decision = 'step_up') AS step_up,
                   min(decided_at) AS first_seen, max(decided_at) AS last_seen
            FROM {audit.table} FINAL WHERE {WINDOW}
            GROUP BY bundle_version ORDER BY first_seen""",
        {"since": ch_time(since), "until": ch_time(until)},
    )


def control_counts(
    audit: Audit, since: datetime, until: datetime, att: Attribution, *, stale_days: float, approvals: bool,
    examples: int,
) -> list[dict[str, Any]]:
    """Per (control, kind enforced|monitor, decision): decisions, examples, and the exception counts. A decision
    that exercised no control at all is the row with control ''."""
    via = "notEmpty(approvals)" if approvals else "0"
    return audit.query(
        f"""SELECT tupleElement(cx, 1) AS control, tupleElement(cx, 2) AS kind, decision,
                   count() AS decisions, groupUniqArray({{examples:UInt32}})(request_id) AS examples,
                   countIf(via_approval) AS via_approval, countIf(stale_allow) AS stale_allows,
                   uniqExactIf(identity_id, stale_allow) AS stale_identities
            FROM (SELECT request_id, identity_id, decision, {via} AS via_approval,
                         decision = 'allow' AND ifNull(credential_age_days > {{stale:Float64}}, 0) AS stale_allow,
                         {ENFORCED} AS c_enf, {MONITORED} AS c_mon
                  FROM {audit.table} FINAL WHERE {WINDOW})
            LEFT ARRAY JOIN arrayConcat(arrayMap(c -> (c, 'enforced'), c_enf),
                                        arrayMap(c -> (c, 'monitor'), c_mon)) AS cx
            GROUP BY control, kind, decision ORDER BY control, kind, decision""",
        _params(since, until, att, stale=float(stale_days), examples=int(examples)),
    )


def monitor_hits(audit: Audit, since: datetime, until: datetime, att: Attribution, *, examples: int
                 ) -> list[dict[str, Any]]:
    return audit.query(
        f"""SELECT control, tupleElement(m, 'policy') AS policy, tupleElement(m, 'rule') AS rule,
                   tupleElement(m, 'effect') AS effect, count() AS hits,
                   groupUniqArray({{examples:UInt32}})(request_id) AS examples
            FROM (SELECT request_id, bundle_version, monitor FROM {audit.table} FINAL
                  WHERE {WINDOW} AND notEmpty(monitor))
            ARRAY JOIN monitor AS m
            ARRAY JOIN {CMAP}[concat(bundle_version, '{SEP}', tupleElement(m, 'rule'))] AS control
            GROUP BY control, policy, rule, effect ORDER BY control, hits DESC, rule""",
        _params(since, until, att, examples=int(examples)),
    )


def approval_grants(audit: Audit, since: datetime, until: datetime, att: Attribution, *, examples: int
                    ) -> list[dict[str, Any]]:
    """Per (control, approver): decisions that relied on an approval (audit column ``approvals``)."""
    return audit.query(
        f"""SELECT control, tupleElement(a, 'approved_by') AS approved_by, uniqExact(request_id) AS decisions,
                   groupUniqArray({{examples:UInt32}})(tupleElement(a, 'approval_id')) AS approval_ids,
                   groupArray({{examples:UInt32}})(tuple(request_id, identity_id, action, resource_id, decision,
                        decided_at, tupleElement(a, 'approval_id'), tupleElement(a, 'granted_at'),
                        tupleElement(a, 'expires_at'))) AS grants
            FROM (SELECT request_id, identity_id, action, resource_id, decision, decided_at, approvals,
                         {ENFORCED} AS controls
                  FROM {audit.table} FINAL WHERE {WINDOW} AND notEmpty(approvals))
            ARRAY JOIN controls AS control
            ARRAY JOIN approvals AS a
            GROUP BY control, approved_by ORDER BY control, decisions DESC, approved_by""",
        _params(since, until, att, examples=int(examples)),
    )


def stale_allows(audit: Audit, since: datetime, until: datetime, att: Attribution, *, stale_days: float,
                 limit: int, examples: int) -> list[dict[str, Any]]:
    return audit.query(
        f"""SELECT control, identity_id, count() AS allows, max(credential_age_days) AS max_credential_age_days,
                   max(decided_at) AS last_allowed, groupUniqArray({{examples:UInt32}})(request_id) AS examples
            FROM (SELECT request_id, identity_id, decided_at, credential_age_days, {ENFORCED} AS controls
                  FROM {audit.table} FINAL
                  WHERE {WINDOW} AND decision = 'allow' AND credential_age_days > {{stale:Float64}})
            ARRAY JOIN controls AS control
            GROUP BY control, identity_id
            ORDER BY control, max_credential_age_days DESC, identity_id
            LIMIT {{limit:UInt32}} BY control""",
        _params(since, until, att, stale=float(stale_days), limit=int(limit), examples=int(examples)),
    )


# ---- assembling the report -------------------------------------------------------------------------------------


def _sorted_examples(ids: Iterable[str], n: int) -> list[str]:
    return sorted(ids)[:n]


def implementations(used: Sequence[BundleInfo]) -> dict[str, list[dict[str, Any]]]:
    """control -> [{policy, mode, rules, bundle_versions, signers}] over the bundles in use (pure)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for b in used:
        for p in b.policies:
            rules = [r["id"] for r in p.get("rules") or []]
            if not rules:
                continue
            for c in p.get("controls") or []:
                entry = out.setdefault(c, {}).setdefault(
                    p["name"], {"policy": p["name"], "mode": p.get("mode", "enforce"), "owner": p.get("owner", ""),
                                "rules": [], "bundle_versions": [], "signers": []})
                entry["rules"] = sorted(set(entry["rules"]) | set(rules))
                if b.version not in entry["bundle_versions"]:
                    entry["bundle_versions"].append(b.version)
                if b.signer not in entry["signers"]:
                    entry["signers"].append(b.signer)
    return {c: sorted(v.values(), key=lambda e: e["policy"]) for c, v in out.items()}


def build_evidence(
    audit: Audit,
    bundles: BundleSet,
    catalogue: Catalogue,
    since: datetime,
    until: datetime,
    *,
    examples: int = 5,
) -> dict[str, Any]:
    """The whole evidence report as JSON-ready data (``--json`` prints it; the HTML renders it)."""
    notes: list[str] = []
    vrows = versions_in_window(audit, since, until)
    att = attribution(bundles, [r["bundle_version"] for r in vrows])
    current = bundles.bundles.get(bundles.current or "") or bundles.local
    stale_days, stale_from = stale_threshold(current)
    approvals = has_column(audit, "approvals")
    if not approvals:
        notes.append(f"the audit table {audit.table} has no 'approvals' column (sql/008): decisions granted "
                     "through approvals cannot be shown; run `pdx audit migrate`")
    counts = control_counts(audit, since, until, att, stale_days=stale_days, approvals=approvals, examples=examples)
    # per framework, distinct decisions (one decision exercising two controls of a framework counts once): the
    # same query with each rule mapped to its controls' frameworks
    fw_att = Attribution(att.keys, [sorted({catalogue.framework_of(c) for c in cs}) for cs in att.controls],
                         att.versions, att.used)
    fw_counts = control_counts(audit, since, until, fw_att, stale_days=stale_days, approvals=False, examples=1)
    monitor = monitor_hits(audit, since, until, att, examples=examples)
    grants = approval_grants(audit, since, until, att, examples=examples) if approvals else []
    stale = stale_allows(audit, since, until, att, stale_days=stale_days, limit=20, examples=examples)
    impl = implementations(att.used)
    for v, i in att.versions.items():
        if i["content"] == "inferred":
            notes.append(f"bundle {v[:12]}: its content is no longer on {config.TOPIC_POLICIES} nor in the local "
                         f"policies; its decisions are attributed by rule id with bundle {i['mapped_with'][:12]}")

    ids = set(impl) | set(catalogue.controls)
    for r in counts:
        if r["control"]:
            ids.add(r["control"])
    controls: dict[str, dict[str, Any]] = {}
    for cid in ids:
        cat = catalogue.controls.get(cid)
        controls[cid] = {
            "id": cid,
            "title": cat.title if cat else "",
            "framework": catalogue.framework_of(cid),
            "in_catalogue": cat is not None,
            "superseded_by": cat.superseded_by if cat else None,
            "implemented_by": impl.get(cid, []),
            "decisions": {"total": 0, **{o: 0 for o in OUTCOMES}, "monitor": 0},
            "examples": {o: [] for o in OUTCOMES},
            "exceptions": {
                "monitor_hits": {"decisions": 0, "by_rule": []},
                "approvals": {"available": approvals, "decisions": 0, "by_approver": []},
                "stale_credentials": {"threshold_days": stale_days, "allows": 0, "identities_count": 0,
                                      "identities": []},
            },
        }
    totals = {"decisions": 0, **{o: 0 for o in OUTCOMES}, "without_control": 0}
    for r in vrows:
        totals["decisions"] += int(r["decisions"])
        for o in OUTCOMES:
            totals[o] += int(r[o])
    for r in counts:
        n, d = int(r["decisions"]), str(r["decision"])
        if not r["control"]:
            totals["without_control"] += n
            continue
        c = controls[r["control"]]
        if r["kind"] == "monitor":
            c["decisions"]["monitor"] += n
            c["exceptions"]["monitor_hits"]["decisions"] += n
            continue
        c["decisions"]["total"] += n
        if d in OUTCOMES:
            c["decisions"][d] += n
            c["examples"][d] = _sorted_examples(r["examples"], examples)
        c["exceptions"]["approvals"]["decisions"] += int(r["via_approval"])
        c["exceptions"]["stale_credentials"]["allows"] += int(r["stale_allows"])
        c["exceptions"]["stale_credentials"]["identities_count"] += int(r["stale_identities"])
    for r in monitor:
        controls[r["control"]]["exceptions"]["monitor_hits"]["by_rule"].append(
            {"policy": r["policy"], "rule": r["rule"], "would_have": r["effect"], "hits": int(r["hits"]),
             "examples": _sorted_examples(r["examples"], examples)})
    for r in grants:
        controls[r["control"]]["exceptions"]["approvals"]["by_approver"].append({
            "approved_by": r["approved_by"], "decisions": int(r["decisions"]),
            "approval_ids": sorted(r["approval_ids"]),
            "grants": [dict(zip(("request_id", "identity_id", "action", "resource_id", "decision", "decided_at",
                                 "approval_id", "granted_at", "expires_at"), g, strict=True)) for g in r["grants"]],
        })
    for r in stale:
        controls[r["control"]]["exceptions"]["stale_credentials"]["identities"].append({
            "identity_id": r["identity_id"], "allows": int(r["allows"]),
            "max_credential_age_days": round(float(r["max_credential_age_days"]), 1),
            "last_allowed": r["last_allowed"], "examples": _sorted_examples(r["examples"], examples)})

    implemented = {cid for cid, c in controls.items() if c["implemented_by"]}
    for c in controls.values():
        if c["implemented_by"]:
            c["status"] = "exercised" if c["decisions"]["total"] or c["decisions"]["monitor"] else "not exercised"
        elif c["superseded_by"] and c["superseded_by"] in implemented:
            c["status"] = "covered by successor"
        elif c["decisions"]["total"] or c["decisions"]["monitor"]:
            c["status"] = "exercised (inferred)"  # only through a bundle whose content was inferred
        else:
            c["status"] = "gap"
    order = {fw.id: i for i, fw in enumerate(catalogue.frameworks)}
    cat_pos = {cid: i for i, cid in enumerate(catalogue.controls)}
    ordered = sorted(controls.values(), key=lambda c: (order.get(c["framework"], len(order)),
                                                       cat_pos.get(c["id"], len(cat_pos)), c["id"]))
    frameworks = []
    fw_totals: Counter[tuple[str, str]] = Counter()
    for r in fw_counts:
        fw_totals[(str(r["control"]), str(r["kind"]))] += int(r["decisions"])
    known_fw = [(fw.id, fw.title) for fw in catalogue.frameworks]
    if any(c["framework"] == "other" for c in ordered):
        known_fw.append(("other", "Other (not in the catalogue's frameworks)"))
    for fid, title in known_fw:
        members = [c for c in ordered if c["framework"] == fid]
        frameworks.append({
            "id": fid, "title": title, "controls": [c["id"] for c in members],
            "implemented": sum(1 for c in members if c["implemented_by"]),
            "exercised": sum(1 for c in members if c["status"].startswith("exercised")),
            "gaps": sum(1 for c in members if c["status"] == "gap"),
            "decisions": fw_totals.get((fid, "enforced"), 0),
            "monitor_hits": fw_totals.get((fid, "monitor"), 0),
        })
    bundle_rows = []
    for r in vrows:
        v = r["bundle_version"]
        i = att.versions.get(v, {})
        b = bundles.bundles.get(v)
        bundle_rows.append({
            "version": v, "decisions": int(r["decisions"]), "first_seen": r["first_seen"], "last_seen": r["last_seen"],
            "content": i.get("content"), "mapped_with": i.get("mapped_with"), "source": i.get("source"),
            "signer": i.get("signer"), "signed_at": b.signed_at if b else None,
            "published_by": b.published_by if b else None, "serial": b.serial if b else None,
        })
    return {
        "report": "evidence",
        "since": since,
        "until": until,
        "generated_at": datetime.now(UTC),
        "database": audit.db,
        "policy_source": {
            "kind": bundles.kind, "note": bundles.note, "topic": config.TOPIC_POLICIES,
            "current_bundle": bundles.current, "refused": bundles.refused,
        },
        "catalogue": {"path": catalogue.path, "controls": len(catalogue.controls)},
        "stale_credentials": {"threshold_days": stale_days, "threshold_from": stale_from},
        "totals": totals,
        "bundles": bundle_rows,
        "frameworks": frameworks,
        "controls": ordered,
        "gaps": [{"id": c["id"], "title": c["title"], "framework": c["framework"]}
                 for c in ordered if c["status"] == "gap"],
        "uncatalogued": [c["id"] for c in ordered if not c["in_catalogue"]],
        "notes": notes,
    }


# ---- HTML ------------------------------------------------------------------------------------------------------

COLORS = {"allow": "#2e7d32", "deny": "#c62828", "step_up": "#f9a825", "monitor": "#6a1b9a"}


def _t(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _bar(c: dict[str, Any], vmax: int, width: int = 360, height: int = 16) -> str:
    """One stacked bar (allow / deny / step_up, then monitor hits) as inline SVG."""
    d = c["decisions"]
    parts, x, marks = [], 0.0, 0
    for series in (*OUTCOMES, "monitor"):
        v = int(d[series])
        if v <= 0:
            continue
        w = max(width * v / max(vmax, 1), 2.0)
        parts.append(f'<rect class="mark" x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" '
                     f'fill="{COLORS[series]}"><title>{escape(c["id"])} — {series}: {v}</title></rect>')
        x += w
        marks += 1
    return (f'<svg class="chart" data-chart="control" data-control="{escape(c["id"])}" data-marks="{marks}" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


def _ids(ids: Iterable[str]) -> str:
    return ", ".join(f"<code>{escape(i)}</code>" for i in ids) or '<span class="muted">–</span>'


def _control_html(c: dict[str, Any], vmax: int) -> str:
    d, ex = c["decisions"], c["exceptions"]
    impl = "".join(
        f"<tr><td><code>{escape(i['policy'])}</code> <span class=\"muted\">({escape(i['mode'])})</span></td>"
        f"<td>{_ids(i['rules'])}</td><td>{_ids(v[:12] for v in i['bundle_versions'])}</td>"
        f"<td>{', '.join(escape(s) for s in i['signers'])}</td></tr>"
        for i in c["implemented_by"]
    ) or '<tr><td colspan="4" class="muted">no rule implements this control</td></tr>'
    examples = "".join(f"<li>{o}: {_ids(c['examples'][o])}</li>" for o in OUTCOMES if c["examples"][o])
    mon = "".join(
        f"<li><code>{escape(m['rule'])}</code> would have {escape(m['would_have'])}: {m['hits']} "
        f"(e.g. {_ids(m['examples'][:3])})</li>" for m in ex["monitor_hits"]["by_rule"])
    appr = ex["approvals"]
    if not appr["available"]:
        appr_html = '<li class="muted">approvals not recorded by this audit table (sql/008 not applied)</li>'
    else:
        appr_html = "".join(
            f"<li>approved by <b>{escape(a['approved_by'])}</b>: {a['decisions']} decisions "
            f"(approvals {_ids(a['approval_ids'])}; e.g. {_ids(g['request_id'] for g in a['grants'][:3])})</li>"
            for a in appr["by_approver"])
    st = ex["stale_credentials"]
    stale_html = "".join(
        f"<li><code>{escape(s['identity_id'])}</code>: {s['allows']} allows, credential "
        f"{s['max_credential_age_days']:g} days old (e.g. {_ids(s['examples'][:3])})</li>" for s in st["identities"])
    status = escape(c["status"])
    return f"""
<section class="control" id="control-{escape(c['id'])}" data-control="{escape(c['id'])}" data-status="{status}"
         data-decisions="{d['total']}" data-monitor="{d['monitor']}">
  <h3><code>{escape(c['id'])}</code> {escape(c['title'])} <span class="badge s-{status.split()[0]}">{status}</span></h3>
  <div class="row"><div>decisions <b>{d['total']}</b> · allow {d['allow']} · deny {d['deny']} · step-up
    {d['step_up']} · monitor hits {d['monitor']}</div>{_bar(c, vmax)}</div>
  <table><thead><tr><th>policy</th><th>rules</th><th>bundle versions</th><th>signers</th></tr></thead>
    <tbody>{impl}</tbody></table>
  {f'<p>example requests:</p><ul>{examples}</ul>' if examples else ''}
  <details{' open' if (mon or appr_html or stale_html) else ''}><summary>exceptions</summary><ul>
    <li>monitor-mode hits: {ex['monitor_hits']['decisions']}<ul>{mon}</ul></li>
    <li>granted through approvals: {appr['decisions']}<ul>{appr_html}</ul></li>
    <li>allowed with a credential older than {st['threshold_days']:g} days: {st['allows']} allows by
      {st['identities_count']} identities<ul>{stale_html}</ul></li>
  </ul></details>
</section>"""


def render_html(data: dict[str, Any]) -> str:
    ctrls = data["controls"]
    vmax = max([c["decisions"]["total"] + c["decisions"]["monitor"] for c in ctrls] + [1])
    by_fw: dict[str, list[dict[str, Any]]] = {}
    for c in ctrls:
        by_fw.setdefault(c["framework"], []).append(c)
    sections = []
    for fw in data["frameworks"]:
        body = "".join(_control_html(c, vmax) for c in by_fw.get(fw["id"], []))
        sections.append(
            f'<section class="framework" id="fw-{escape(fw["id"])}" data-framework="{escape(fw["id"])}" '
            f'data-decisions="{fw["decisions"]}"><h2>{escape(fw["title"])}</h2>'
            f'<div class="sub">{len(fw["controls"])} controls · {fw["implemented"]} implemented · '
            f'{fw["exercised"]} exercised · {fw["gaps"]} gaps · {fw["decisions"]} decisions · '
            f'{fw["monitor_hits"]} monitor hits</div>{body}</section>')
    bundle_rows = "".join(
        "<tr>" + "".join(f"<td>{escape(_t(v))}</td>" for v in (
            (b["version"] or "(none)")[:12], b["decisions"], b["content"], (b["mapped_with"] or "")[:12],
            b["source"], b["signer"], b["signed_at"], b["published_by"], b["first_seen"], b["last_seen"])) + "</tr>"
        for b in data["bundles"]) or '<tr><td colspan="10" class="muted">no decisions in this window</td></tr>'
    gaps = "".join(f"<li><code>{escape(g['id'])}</code> {escape(g['title'])}</li>" for g in data["gaps"])
    notes = "".join(f"<li>{escape(n)}</li>" for n in data["notes"])
    src = data["policy_source"]
    legend = "".join(f'<span class="key"><i style="background:{COLORS[o]}"></i>{o}</span>' for o in COLORS)
    t = data["totals"]
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=escape(f"pdx control evidence {data['since']:%Y-%m-%d} – {data['until']:%Y-%m-%d}"),
        since=escape(_t(data["since"])), until=escape(_t(data["until"])), generated=escape(_t(data["generated_at"])),
        database=escape(str(data["database"])),
        source_kind=escape(src["kind"]), source_note=escape(src["note"]),
        refused="".join(f"<li>{escape(r)}</li>" for r in src["refused"]),
        catalogue=escape(data["catalogue"]["path"]),
        decisions=f"{t['decisions']:,}", without_control=f"{t['without_control']:,}",
        controls=str(sum(1 for c in ctrls if c["implemented_by"])), gap_count=str(len(data["gaps"])),
        stale_after=f"{data['stale_credentials']['threshold_days']:g}",
        stale_from=escape(data["stale_credentials"]["threshold_from"]),
        legend=legend, bundle_rows=bundle_rows, frameworks="".join(sections),
        gaps=gaps or '<li class="muted">none: every catalogued control is implemented</li>',
        uncatalogued=_ids(data["uncatalogued"]), notes=notes or '<li class="muted">none</li>',
    )
