"""Risk score (computed in ClickHouse) and the HTML report, rendered in headless Chromium."""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams import config
from streams.audit.report import COLORS
from streams.audit.risk import WEIGHTS, risk_scores, stale_credentials
from streams.bench import synthetic
from streams.bench.auditdb import AuditDB, fresh_database
from streams.cli.main import main

pytestmark = pytest.mark.integration

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
SINCE, UNTIL = MONDAY, MONDAY + timedelta(days=7)


@pytest.fixture(scope="module")
def ch_url(request: pytest.FixtureRequest) -> str:
    return os.environ.get("PDX_TEST_CLICKHOUSE_URL") or str(request.getfixturevalue("clickhouse_url"))


@pytest.fixture(scope="module")
def db(ch_url: str) -> Iterator[AuditDB]:
    with fresh_database(ch_url, "pdx_t_report", cfg=config.load()) as handle:
        risky = synthetic.make_identity("risky", credential_created=MONDAY - timedelta(days=500))
        calm = synthetic.make_identity("calm", credential_created=MONDAY - timedelta(days=10))
        deny = [("scope_missing", "no scope", "baseline", "baseline/deny")]
        recs = [
            # risky: 2 denies, 1 step-up, 1 allow; 2 restricted + 1 confidential; 2 off-hours (22:00 and Saturday)
            synthetic.make_record(
                "r1",
                "risky",
                MONDAY + timedelta(hours=10),
                decision="deny",
                sensitivity="restricted",
                resource_id="a",
                reasons=deny,
                identity=risky,
            ),
            synthetic.make_record(
                "r2",
                "risky",
                MONDAY + timedelta(hours=22),
                decision="deny",
                sensitivity="restricted",
                resource_id="b",
                reasons=deny,
                identity=risky,
            ),
            synthetic.make_record(
                "r3",
                "risky",
                MONDAY + timedelta(days=5, hours=11),
                decision="step_up",
                sensitivity="confidential",
                resource_id="c",
                reasons=[("approval_required", "approval", "secrets", "secrets/step-up")],
                identity=risky,
            ),
            synthetic.make_record("r4", "risky", MONDAY + timedelta(days=1, hours=9), resource_id="a", identity=risky),
            # calm: 3 allows in office hours on one resource, fresh credential
            *[
                synthetic.make_record(
                    f"c{i}", "calm", MONDAY + timedelta(days=1, hours=9 + i), resource_id="x", identity=calm
                )
                for i in range(3)
            ],
        ]
        handle.writer.insert(recs)
        handle.writer.insert(list(synthetic.records(3000, seed=3, identities=40, start=SINCE, end=UNTIL)))
        yield handle


def test_risk_score_follows_the_documented_formula(db: AuditDB) -> None:
    rows = {r["identity_id"]: r for r in risk_scores(db.audit, SINCE, UNTIL, limit=1000)}
    r = rows["risky"]
    assert (
        r["requests"],
        r["denies"],
        r["step_ups"],
        r["restricted"],
        r["confidential"],
        r["off_hours"],
        r["resources"],
    ) == (4, 2, 1, 2, 1, 2, 3)
    age = r["credential_age_days"]
    assert 500 < age < 506
    expected = (
        WEIGHTS["deny_rate"] * 2 / 4
        + WEIGHTS["step_up_rate"] * 1 / 4
        + WEIGHTS["restricted_rate"] * (2 + 0.5) / 4
        + WEIGHTS["off_hours_rate"] * 2 / 4
        + WEIGHTS["stale_credentials"] * 1.0
        + WEIGHTS["resource_breadth"] * math.log2(1 + 3) / math.log2(101)
    )
    assert r["score"] == pytest.approx(round(expected, 1))
    calm = rows["calm"]
    assert calm["deny_rate"] == 0 and calm["stale_credentials"] == 0 and calm["off_hours_rate"] == 0
    assert calm["score"] == pytest.approx(round(WEIGHTS["resource_breadth"] * 1 / math.log2(101), 1))
    assert 0 <= min(x["score"] for x in rows.values()) and max(x["score"] for x in rows.values()) <= 100
    stale = [s["identity_id"] for s in stale_credentials(db.audit, SINCE, UNTIL, limit=1000)]
    assert "risky" in stale and "calm" not in stale


def _read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Minimal PNG decoder (8-bit RGB/RGBA, non-interlaced) -> width, height, rows of RGB(A) bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and ctype in (2, 6)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if ctype == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def _color_counts(path: Path) -> Counter[tuple[int, int, int]]:
    width, _height, rows = _read_png(path)
    bpp = len(rows[0]) // width
    counts: Counter[tuple[int, int, int]] = Counter()
    for row in rows:
        for i in range(0, len(row), bpp):
            counts[(row[i], row[i + 1], row[i + 2])] += 1
    return counts


def _hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--window-size=1400,2000",
        *extra,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_report_is_self_contained_and_renders_its_charts(
    db: AuditDB, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    code = main(
        [
            "report",
            "risk",
            "--since",
            SINCE.isoformat(),
            "--until",
            UNTIL.isoformat(),
            "--out",
            str(out),
            "--url",
            db.url,
            "--database",
            db.database,
        ]
    )
    assert code == 0, capsys.readouterr().err
    html = out.read_text()
    # self-contained: nothing is fetched (the SVG xmlns is a name, not a request)
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", html)
    assert "@import" not in html and "url(" not in html
    assert "https://" not in html and html.count("http://") == html.count('xmlns="http://www.w3.org/2000/svg"')
    for name in ("decisions_over_time", "top_risk", "denies_by_reason", "rule_hits", "stale_credentials"):
        m = re.search(rf'data-chart="{name}" data-marks="(\d+)"', html)
        assert m and int(m.group(1)) > 0, name
    assert "risky" in html

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): the rendering check cannot run")
    dom = _chromium(out.as_uri(), tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-charts-total="5"' in dom.stdout and 'data-charts-drawn="5"' in dom.stdout
    png = tmp_path / "report.png"
    shot = _chromium(out.as_uri(), tmp_path, f"--screenshot={png}")
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    counts = _color_counts(png)
    for series in ("allow", "deny", "step_up", "risk", "reason", "stale"):
        assert counts[_hex(COLORS[series])] > 400, f"{series} bars not drawn ({counts[_hex(COLORS[series])]} px)"
    white = counts[(255, 255, 255)]
    assert white < 0.9 * sum(counts.values())
