"""The wsgate command line: real subprocesses for keys and cookies, dispatch to the node."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsgate import cli
from wsgate.auth.cookie import CookieCodec
from wsgate.auth.keyring import KeyRing, new_key
from wsgate.config import load


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "wsgate.cli", *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "wsgate.toml"
    path.write_text(
        f'[auth]\ncookie_name = "sess"\nkeys = ["{new_key()}", "{new_key()}"]\ncookie_ttl_s = 600\n'
    )
    return path


def test_keys_new_subprocess() -> None:
    result = run("keys", "new")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert run("keys", "new").stdout.strip() != key


def test_cookie_subprocess_opens(config_file: Path) -> None:
    result = run(
        "cookie", "--config", str(config_file), "--user", "u1", "--org", "acme",
        "--team", "red", "--team", "blue", "--role", "admin", "--name", "Una", "--ttl", "120",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    value = result.stdout.strip()
    config = load(config_file, env={})
    p = CookieCodec.from_config(config.auth, KeyRing.from_config(config.auth)).open(value)
    assert (p.sub, p.org, p.orgs, p.teams, p.roles, p.name) == (
        "u1", "acme", ("acme",), ("red", "blue"), ("admin",), "Una",
    )  # fmt: skip
    assert p.exp - p.iat == 120
    assert p.sid


def test_cookie_installed_script_and_env_keys(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("wsgate")
    if not script.exists():
        pytest.skip("no installed wsgate script next to the interpreter")
    key = new_key()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    env["WSGATE_AUTH_KEYS"] = key
    result = subprocess.run(
        [str(script), "cookie", "--user", "u2", "--org", "acme", "--org", "globex"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    p = CookieCodec(KeyRing(config_keys=[key])).open(result.stdout.strip())
    assert (p.org, p.orgs) == ("acme", ("acme", "globex"))
    assert p.exp - p.iat == 86400  # auth.cookie_ttl_s default


def test_cookie_without_keys_exits_2() -> None:
    result = run("cookie", "--user", "u1", "--org", "acme")
    assert result.returncode == 2
    assert result.stderr.startswith("wsgate: no session key")
    assert result.stdout == ""


def test_config_error_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[auth]\nnope = 1\n")
    result = run("cookie", "--config", str(bad), "--user", "u1", "--org", "acme")
    assert result.returncode == 2
    assert result.stderr == "wsgate: config auth.nope: unknown key\n"
    result = run("cookie", "--config", str(tmp_path / "missing.toml"), "--user", "u", "--org", "a")
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_bad_key_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[auth]\nkeys = ["YWJj"]\n')
    result = run("cookie", "--config", str(path), "--user", "u1", "--org", "acme")
    assert result.returncode == 2
    assert "auth.keys[0]" in result.stderr and "32 bytes" in result.stderr


def test_bad_org_exits_2(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cookie", "--config", str(config_file), "--user", "u", "--org", "a:b"]) == 2
    assert "is not an organization id" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [[], ["keys"], ["cookie", "--org", "acme"], ["demo", "--port", "0"], ["cookie", "--user", "u"]],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2


@pytest.fixture
def fake_node(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    calls: list[tuple[str, object]] = []

    def serve(config_path: str | None) -> int:
        calls.append(("serve", config_path))
        return 0

    def demo(port: int) -> int:
        calls.append(("demo", port))
        return 0

    def print_routes(config_path: str) -> int:
        calls.append(("routes", config_path))
        return 3

    monkeypatch.setattr(cli, "serve", serve)
    monkeypatch.setattr(cli, "demo", demo)
    monkeypatch.setattr(cli, "print_routes", print_routes)
    monkeypatch.delenv("WSGATE_CONFIG", raising=False)
    return calls


def test_dispatch_to_node(
    fake_node: list[tuple[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["serve", "--config", "a.toml"]) == 0
    assert cli.main(["serve"]) == 0
    assert cli.main(["demo"]) == 0
    assert cli.main(["demo", "--port", "9000"]) == 0
    assert cli.main(["routes", "--config", "r.toml"]) == 3
    monkeypatch.setenv("WSGATE_CONFIG", "env.toml")
    assert cli.main(["serve"]) == 0
    assert cli.main(["routes"]) == 3
    assert fake_node == [
        ("serve", "a.toml"),
        ("serve", None),
        ("demo", 8080),
        ("demo", 9000),
        ("routes", "r.toml"),
        ("serve", "env.toml"),
        ("routes", "env.toml"),
    ]


def test_routes_needs_a_config(
    fake_node: list[tuple[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["routes"]) == 2
    assert "routes needs --config" in capsys.readouterr().err
    assert fake_node == []


def test_node_errors_are_reported(
    fake_node: list[tuple[str, object]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wsgate.exceptions import ConfigError

    def serve(config_path: str | None) -> int:
        raise ConfigError("server.listen", "expected host:port")

    monkeypatch.setattr(cli, "serve", serve)
    assert cli.main(["serve"]) == 2
    assert capsys.readouterr().err == "wsgate: config server.listen: expected host:port\n"


def test_a_rate_of_0_disables_the_limit_as_documented() -> None:
    from wsgate.config import from_mapping
    from wsgate.core.limits import parse_rate

    limits = from_mapping({"limits": {"default_rate": "0", "handshake_rate_per_ip": "0"}}, env={}).limits
    assert parse_rate(limits.default_rate, limits.default_burst) is None
    assert parse_rate(limits.handshake_rate_per_ip, limits.handshake_burst_per_ip) is None
    from wsgate.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"limits\.default_rate"):
        from_mapping({"limits": {"default_rate": "fast"}}, env={})


def test_tune_gc_freezes_start_up_and_collects_the_young_less_often() -> None:
    import gc

    saved = gc.get_threshold()
    try:
        cli.tune_gc()
        assert gc.get_threshold() == cli.GC_THRESHOLD
        assert cli.GC_THRESHOLD[0] > saved[0]
        assert gc.get_freeze_count() > 0  # start-up objects: never walked again
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
