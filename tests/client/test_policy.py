"""The Python and JS clients decide every close code the same way (one table)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from wsgate.client.policy import Backoff, reconnect_delay
from wsgate.protocol.codes import CloseCode, should_reconnect

POLICY_JS = Path(__file__).resolve().parents[2] / "clients" / "js" / "policy.js"

# Every close code of protocol/codes.py, plus codes the gateway never sends
# (1005 no status, 1006 abnormal, 1010, 1014, 1015, the 3000 and 4000 ranges).
CODES = sorted({int(c) for c in CloseCode} | {1005, 1006, 1010, 1014, 1015, 3000, 4001,
                                              4400, 4404, 4499, 4500, 4999})
ATTEMPTS = [0, 1, 2, 5, 40]
RANDOMS = [0.0, 0.5, 1.0]
BACKOFF = Backoff(min_ms=100, max_ms=2000, later_ms=700)


def js_decisions() -> list[list[object]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = f"""
import {{ reconnectDelay, shouldReconnect }} from {json.dumps(POLICY_JS.as_uri())};
const codes = {json.dumps(CODES)}, attempts = {json.dumps(ATTEMPTS)}, randoms = {json.dumps(RANDOMS)};
const out = [];
for (const code of codes) for (const attempt of attempts) for (const r of randoms) for (const retry of [undefined, 5000]) {{
  const delay = reconnectDelay(code, attempt, {{ minMs: 100, maxMs: 2000, laterMs: 700 }},
                               {{ retryAfterMs: retry, random: () => r }});
  out.push([code, attempt, r, retry ?? null, shouldReconnect(code), delay]);
}}
console.log(JSON.stringify(out));
"""
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True,
                          text=True, timeout=30, check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_python_and_js_agree_on_every_close_code() -> None:
    rows = js_decisions()
    assert len(rows) == len(CODES) * len(ATTEMPTS) * len(RANDOMS) * 2
    for code, attempt, r, retry, js_should, js_delay in rows:
        assert should_reconnect(code) is js_should, code
        py = reconnect_delay(code, attempt, BACKOFF, retry_after_ms=retry, random=lambda r=r: r)
        assert py == js_delay, (code, attempt, r, retry, py, js_delay)


def test_the_table_says_what_the_protocol_documents() -> None:
    never = [1000, 1002, 1003, 1007, 1008, 1009, 4401, 4403, 4400, 4499]
    assert all(reconnect_delay(c, 0, BACKOFF) is None for c in never)
    assert reconnect_delay(1001, 0, BACKOFF) == 0
    assert reconnect_delay(1012, 0, BACKOFF) == 0
    assert reconnect_delay(1012, 1, BACKOFF, random=lambda: 0.0) == 100  # then backs off
    assert reconnect_delay(1006, 3, BACKOFF, random=lambda: 1.0) == 800
    assert reconnect_delay(1006, 30, BACKOFF, random=lambda: 1.0) == 2000  # capped
    assert reconnect_delay(4429, 0, BACKOFF, retry_after_ms=5000, random=lambda: 0.0) == 5050
