"""A quick Autobahn (kosoku) subset against the real transport: sections 1–7, 9, 10, 12, 13.

The full run is ``python scripts/autobahn.py``; this picks a few cases of each
section, the ones the picows baseline gets wrong included (3.x reserved bits,
5.18 interleaved data frame, 7.3.1 empty close, 7.9.x invalid close codes,
7.1.2 two close frames in one read, 4.1.3/4.2.5 a refused frame after a text).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "autobahn.py"
CASES = [
    "1.1.1", "1.1.8", "1.2.8",
    "2.3", "2.6", "2.10",
    "3.1", "3.4", "3.7",
    "4.1.1", "4.1.3", "4.2.5",
    "5.1", "5.6", "5.15", "5.18", "5.19",
    "6.1.1", "6.3.1", "6.4.1", "6.12.1",
    "7.1.1", "7.1.2", "7.1.3", "7.3.1", "7.3.2", "7.5.1", "7.7.1", "7.7.13", "7.9.1", "7.9.5",
    "9.1.1", "9.2.1",
    "10.1.1",
    # permessage-deflate: a 16-byte binary message (compressed although it grows),
    # a fragmented one, a 9-bit server window, a list of offers.
    "12.2.1", "12.1.11", "13.3.1", "13.7.1",
]  # fmt: skip


@pytest.mark.timeout(60)
def test_autobahn_quick_subset() -> None:
    argv = [sys.executable, str(SCRIPT), "--timeout", "45", "-p", "4"]
    for case in CASES:
        argv += ["-i", case]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=55)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    counts = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"section\s+(\d+):\s+(\d+) passed\s+(\d+) failed", out)
    }
    expected: dict[str, int] = {}
    for case in CASES:
        expected[case.split(".")[0]] = expected.get(case.split(".")[0], 0) + 1
    assert counts == {section: (n, 0) for section, n in expected.items()}, out
