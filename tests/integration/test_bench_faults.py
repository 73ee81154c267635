"""``pdx bench faults --only malformed`` on the test services: a small run reports every field, and pdx keeps its
contract for malformed requests (no reply on a bad route, audited denies, nothing lost, nothing written to a
protected topic). The other scenarios kill processes and restart services: too long for the suite (run them with
``pdx bench faults``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.e2e]



def test_malformed_requests_under_load(stack_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "bench", "faults", "--only", "malformed", "--malformed", "300",
         "--rate", "50", "--json"],
        env=stack_env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["takeover_p50_s"] is None and out["takeover_s"] == []
    [s] = out["scenarios"]
    assert s["name"] == "malformed" and s["malformed_sent"] == 300 and s["send_failed"] == 0
    assert s["sent"] == s["valid_sent"] + 300 and s["valid_sent"] > 0
    assert s["answered"] + s["pdp_timeouts"] == s["valid_sent"]
    for key in ("conflicting", "misrouted", "lost", "protected_topic_writes"):
        assert s[key] == 0, (key, s)
    assert s["audit_rows"] >= s["valid_sent"] and s["settled"]
    categories = s["malformed"]
    assert categories["reply_to_protected"]["replied"] == 0
    assert categories["reply_to_protected"]["audited"] == categories["reply_to_protected"]["sent"] > 0
    assert categories["garbage_bytes"]["audited"] == 0
    assert categories["invalid_sensitivity"]["reason_codes"] == ["invalid_request"]
    assert all(c["ok"] is not False for c in categories.values()), categories
    assert s["dlq_records"] >= s["dlq_expected"] > 0
    assert out["violations"] == []
