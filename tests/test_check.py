"""``wsgate check --config F``: validate, print the effective config with secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from wsgate.auth.keyring import new_key

from .servers import WSGATE


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    return subprocess.run([*WSGATE, *args], capture_output=True, text=True, timeout=30,
                          env={**clean, **(env or {})})


def test_check_prints_the_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    key = new_key()
    config = tmp_path / "wsgate.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:8080"
[api]
keys = ["api-key-1"]
[api.aws]
credentials = [{{access_key_id = "AKID", secret_access_key = "aws-secret-1"}}]
[auth]
keys = ["{key}"]
[broker]
url = "redis://user:broker-password-1@127.0.0.1:6379/0"
[services.orders]
url = "http://127.0.0.1:9/actions"
secret = "hmac-secret-1"
[[routes]]
match = "orders/*"
service = "orders"
""")
    done = _run("check", "--config", str(config), env={"WSGATE_SERVER_LISTEN": "127.0.0.1:9999"})
    assert done.returncode == 0, done.stderr
    for secret in (key, "api-key-1", "aws-secret-1", "broker-password-1", "hmac-secret-1"):
        assert secret not in done.stdout, secret
    shown = json.loads(done.stdout)
    assert shown["server"]["listen"] == "127.0.0.1:9999"  # the environment override, applied
    assert shown["auth"]["keys"] == ["***"] and shown["api"]["keys"] == ["***"]
    assert shown["services"]["orders"]["secret"] == "***"
    assert shown["api"]["aws"]["credentials"][0] == {"access_key_id": "AKID", "secret_access_key": "***"}
    assert shown["broker"]["url"] == "redis://user:***@127.0.0.1:6379/0"
    assert shown["routes"][0]["match"] == "orders/*"
    assert "WSGATE_SERVER_LISTEN" in done.stderr  # which overrides came from the environment


@pytest.mark.parametrize(
    "body",
    [
        '[server]\nlisten = "nowhere"\n',
        '[server]\nmax_mesage_bytes = 10\n',
        '[auth]\nkeys = ["not-a-key"]\n',
        "this is not toml = = \n",
    ],
)
def test_check_fails_with_the_message_serve_gives(tmp_path: Path, body: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(body)
    checked = _run("check", "--config", str(config))
    served = _run("serve", "--config", str(config))
    assert checked.returncode == served.returncode == 2
    assert checked.stderr.strip() and checked.stderr.strip() == served.stderr.strip()
    assert checked.stdout == ""
