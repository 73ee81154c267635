"""``pdx report risk``: one self-contained HTML file with hand-drawn inline SVG charts.

No scripts or styles are loaded from anywhere: the charts are SVG elements written here, the CSS is inline, and a
few lines of inline JS only add hover highlighting and mark the page as drawn (``data-charts-drawn`` on <html>,
used by the headless-browser test). Every label comes from data and is HTML-escaped.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any

from streams.audit.queries import Audit
from streams.audit.risk import (
    FORMULA_TEXT,
    STALE_AFTER_DAYS,
    WEIGHTS,
    approval_requests_by_identity,
    risk_scores,
    stale_credentials,
)

TEMPLATE = Path(__file__).resolve().parent / "report_template.html"

COLORS = {
    "allow": "#2e7d32",
    "deny": "#c62828",
    "step_up": "#f9a825",
    "risk": "#6a1b9a",
    "stale": "#00838f",
    "reason": "#ef6c00",
}
OUTCOMES = ("allow", "deny", "step_up")


def bucket_seconds(since: datetime, until: datetime, max_buckets: int = 72) -> int:
    hours = max((until - since).total_seconds() / 3600.0, 1.0)
    return int(max(1, math.ceil(hours / max_buckets)) * 3600)


def build_report_data(audit: Audit, since: datetime, until: datetime, *, top: int = 15) -> dict[str, Any]:
    bucket = bucket_seconds(since, until)
    return {
        "since": since,
        "until": until,
        "generated_at": datetime.now(UTC),
        "database": audit.db,
        "bucket_s": bucket,
        "totals": audit.totals(since, until),
        "over_time": audit.decisions_over_time(since, until, bucket_s=bucket),
        "risk": risk_scores(audit, since, until, limit=top),
        "reasons": audit.denies_by_reason(since, until, limit=15),
        "rules": audit.rule_hits(since, until, limit=15),
        "stale": stale_credentials(audit, since, until, limit=15),
        "approvals": approval_requests_by_identity(audit, since, until, limit=15),
    }


# ---- SVG primitives ----------------------------------------------------------------------------------------------


def _fmt(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _empty(width: int, height: int, name: str) -> str:
    return (
        f'<svg class="chart" data-chart="{name}" data-marks="0" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
        'class="muted">no data in this window</text></svg>'
    )


def stacked_columns(rows: list[dict[str, Any]], *, width: int = 1240, height: int = 320) -> str:
    """Decisions over time: one column per bucket, stacked allow / deny / step_up."""
    if not rows:
        return _empty(width, height, "decisions_over_time")
    left, right, top, bottom = 60, 20, 20, 40
    pw, ph = width - left - right, height - top - bottom
    totals = [sum(int(r[o]) for o in OUTCOMES) for r in rows]
    ymax = _nice_max(max(totals))
    n = len(rows)
    slot = pw / n
    bw = max(slot * 0.8, 1.0)
    parts = [_y_axis(left, top, pw, ph, ymax)]
    marks = 0
    label_every = max(1, math.ceil(n / 12))
    for i, r in enumerate(rows):
        x = left + i * slot + (slot - bw) / 2
        y: float = top + ph
        for o in OUTCOMES:
            v = int(r[o])
            if v <= 0:
                continue
            h = ph * v / ymax
            y -= h
            when = r["bucket"].strftime("%Y-%m-%d %H:%M")
            parts.append(
                f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="{COLORS[o]}">'
                f"<title>{escape(when)} UTC — {o}: {v}</title></rect>"
            )
            marks += 1
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">'
                f"{escape(r['bucket'].strftime('%m-%d %H:%M'))}</text>"
            )
    return _svg("decisions_over_time", width, height, marks, parts)


def _y_axis(left: int, top: int, pw: float, ph: float, ymax: float) -> str:
    out = []
    for k in range(5):
        v = ymax * k / 4
        y = top + ph - ph * k / 4
        out.append(f'<line x1="{left}" x2="{left + pw:.1f}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt(v)}</text>')
    return "".join(out)


def _svg(name: str, width: int, height: int, marks: int, parts: list[str]) -> str:
    return (
        f'<svg class="chart" data-chart="{name}" data-marks="{marks}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def hbars(
    name: str,
    items: list[tuple[str, list[tuple[str, float, str]]]],
    *,
    width: int = 610,
    bar_h: int = 22,
    value_fmt: Any = _fmt,
    threshold: float | None = None,
) -> str:
    """Horizontal (optionally stacked) bars: items = [(label, [(series, value, color), ...]), ...]."""
    if not items:
        return _empty(width, 120, name)
    left, right, top = 190, 70, 10
    height = top + len(items) * (bar_h + 6) + 24
    pw = width - left - right
    vmax = _nice_max(max(sum(v for _s, v, _c in segs) for _l, segs in items) or 1)
    if threshold is not None:
        vmax = max(vmax, _nice_max(threshold))
    parts: list[str] = []
    marks = 0
    for i, (label, segs) in enumerate(items):
        y = top + i * (bar_h + 6)
        short = label if len(label) <= 26 else label[:25] + "…"
        parts.append(
            f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end" class="label">'
            f"<title>{escape(label)}</title>"
            f"{escape(short)}</text>"
        )
        x = float(left)
        total = 0.0
        for series, v, color in segs:
            if v <= 0:
                continue
            w = max(pw * v / vmax, 1.0)
            parts.append(
                f'<rect class="mark" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}">'
                f"<title>{escape(label)} — {escape(series)}: {value_fmt(v)}</title></rect>"
            )
            x += w
            total += v
            marks += 1
        parts.append(f'<text x="{x + 6:.1f}" y="{y + bar_h * 0.7:.1f}" class="value">{value_fmt(total)}</text>')
    if threshold is not None:
        tx = left + pw * threshold / vmax
        parts.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 4}" y2="{height - 20}" class="threshold"/>'
            f'<text x="{tx:.1f}" y="{height - 6}" text-anchor="middle" class="tick">{value_fmt(threshold)} days</text>'
        )
    return _svg(name, width, height, marks, parts)


NO_APPROVALS = '<tr><td colspan="6" class="muted">no step-up opened an approval request</td></tr>'


def render_html(data: dict[str, Any]) -> str:
    totals = data["totals"] or {}
    risk_items = [(str(r["identity_id"]), [("score", float(r["score"]), COLORS["risk"])]) for r in data["risk"]]
    reason_items = [(str(r["code"]), [("denies", float(r["denies"]), COLORS["reason"])]) for r in data["reasons"]]
    rule_items = [(str(r["rule"]), [(o, float(r[o]), COLORS[o]) for o in OUTCOMES]) for r in data["rules"]]
    stale_items = [
        (str(r["identity_id"]), [("credential age (days)", float(r["credential_age_days"]), COLORS["stale"])])
        for r in data["stale"]
    ]
    risk_rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(str(v))}</td>"
            for v in (
                r["identity_id"],
                r["kind"],
                r["owner"],
                f"{r['score']:.1f}",
                r["requests"],
                f"{r['deny_rate']:.0%}",
                f"{r['step_up_rate']:.0%}",
                f"{r['restricted_rate']:.0%}",
                f"{r['off_hours_rate']:.0%}",
                "" if r["credential_age_days"] is None else f"{r['credential_age_days']:.0f}",
                r["resources"],
            )
        )
        + "</tr>"
        for r in data["risk"]
    )
    approval_rows = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in (
            r["identity_id"], r["opened"], r["approved"], r["awaiting"],
            f"{r['median_time_to_approve_s']:.1f}" if r["approved"] else "–",
            f"{r['max_time_to_approve_s']:.1f}" if r["approved"] else "–",
        )) + "</tr>"
        for r in data.get("approvals") or ()
    )
    weights = ", ".join(f"{escape(k)} {v:g}" for k, v in WEIGHTS.items())
    requests = int(totals.get("requests") or 0)

    def pct(key: str) -> str:
        return f"{(int(totals.get(key) or 0) / requests):.1%}" if requests else "–"

    legend = "".join(f'<span class="key"><i style="background:{COLORS[o]}"></i>{o}</span>' for o in OUTCOMES)
    page = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=escape(f"pdx risk report {data['since']:%Y-%m-%d} – {data['until']:%Y-%m-%d}"),
        since=escape(data["since"].strftime("%Y-%m-%d %H:%M UTC")),
        until=escape(data["until"].strftime("%Y-%m-%d %H:%M UTC")),
        generated=escape(data["generated_at"].strftime("%Y-%m-%d %H:%M:%S UTC")),
        database=escape(str(data["database"])),
        requests=f"{requests:,}",
        identities=f"{int(totals.get('identities') or 0):,}",
        allow_pct=pct("allow"),
        deny_pct=pct("deny"),
        step_up_pct=pct("step_up"),
        bucket=escape(f"{data['bucket_s'] // 3600} h"),
        legend=legend,
        chart_time=stacked_columns(data["over_time"]),
        chart_risk=hbars("top_risk", risk_items, value_fmt=lambda v: f"{v:.1f}"),
        chart_reasons=hbars("denies_by_reason", reason_items),
        chart_rules=hbars("rule_hits", rule_items),
        chart_stale=hbars("stale_credentials", stale_items, value_fmt=lambda v: f"{v:.0f}", threshold=STALE_AFTER_DAYS),
        risk_rows=risk_rows or '<tr><td colspan="11" class="muted">no identities in this window</td></tr>',
        approval_rows=approval_rows or NO_APPROVALS,
        formula=escape(FORMULA_TEXT),
        weights=weights,
        stale_after=f"{STALE_AFTER_DAYS:g}",
    )
    return page
