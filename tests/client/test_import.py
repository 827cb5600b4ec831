"""``import wsgate.client`` needs no websockets: it is imported at the first connection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_client_imports_without_websockets() -> None:
    code = (
        "import sys; sys.modules['websockets'] = None\n"  # any import of it fails
        "import wsgate, wsgate.client\n"
        "c = wsgate.client.Client('ws://127.0.0.1:1/ws')\n"
        "assert 'websockets' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
        "print(c.state)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "closed"
