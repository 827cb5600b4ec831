"""The benches run the gateway the caller names: ``PYTHONPATH`` before the bench's own ``src``.

A base-against-candidate comparison (``PYTHONPATH=/tmp/base/src python bench/X.py``)
compared the candidate with itself while the bench's tree went first (bench/README.md,
issue 9's round trip).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_a_server_process_imports_wsgate_from_the_callers_pythonpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "src" / "wsgate"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "src"))
    sys.modules.pop("_servers", None)
    import _servers

    assert _servers.gateway_source() == str(fake / "__init__.py")
    monkeypatch.delenv("PYTHONPATH")
    assert _servers.gateway_source() == str(BENCH.parent / "src" / "wsgate" / "__init__.py")
