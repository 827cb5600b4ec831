"""The benches run the gateway the caller names: ``PYTHONPATH`` before the bench's own ``src``.

A base-against-candidate comparison (``PYTHONPATH=/tmp/base/src python bench/X.py``)
compared the candidate with itself while the bench's tree went first (bench/README.md,
issue 9's round trip).
"""

from __future__ import annotations

import subprocess
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


@pytest.mark.parametrize(
    ("binary", "build", "stderr"),
    [
        ("CPP_ECHO", "cpp_echo_reason", "g++: fatal error: no input"),
        ("GO_ECHO", "go_echo_reason", "build_nats_echo: go not found"),
    ],
)
def test_a_failed_echo_build_is_a_reason_not_an_exception(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, binary: str, build: str, stderr: str
) -> None:
    """procedures.py falls back to another echo service with this reason printed."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("procedures", None)
    import procedures

    monkeypatch.setattr(procedures, binary, tmp_path / "absent")
    monkeypatch.setattr(
        procedures.subprocess, "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 1, "", stderr + "\n"),
    )  # fmt: skip
    reason = getattr(procedures, build)()
    assert reason is not None and "exit 1" in reason and stderr in reason
