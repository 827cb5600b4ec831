"""The built wheel carries the demo: ``pip install`` it, and ``wsgate demo`` works outside a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from .helpers import free_port, wait_until
from .servers import ServerProcess

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_the_wheel_runs_the_demo_outside_a_checkout(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        check=True, timeout=300, capture_output=True,
    )
    (wheel,) = wheels.glob("wsgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:  # the dashboard is package data
        shipped = set(archive.namelist())
    for name in ("index.html", "admin.js", "admin.css"):
        assert f"wsgate/api/admin_site/{name}" in shipped, name
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, timeout=300, capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The wheel's wsgate comes first on the path: not the checkout's (the venv's editable install).
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}
    port = free_port()
    demo = ServerProcess([sys.executable, "-m", "wsgate.cli", "demo", "--port", str(port)], port,
                         "http", log=tmp_path / "demo.log", cwd=elsewhere, env=env)
    demo.start(timeout=20)
    try:
        wait_until(lambda: "internal API on" in demo.output(), 10, what="the banner")
        for path, kind in (("/sign-in", "text/html"), ("/demo/app.js", "text/javascript"),
                           ("/demo/style.css", "text/css"), ("/js/wsgate.js", "text/javascript")):
            with urllib.request.urlopen(f"{demo.url}{path}", timeout=5) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind), path
        assert "Traceback" not in demo.output()
        assert str(site) in subprocess.run(
            [sys.executable, "-c", "import wsgate, sys; print(wsgate.__file__)"],
            env=env, cwd=elsewhere, capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    finally:
        demo.stop()
