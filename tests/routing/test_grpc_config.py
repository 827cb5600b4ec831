"""The ``[[grpc]]`` section: defaults, aliases in both forms, errors naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gateway import make_config
from wsgate.config import GrpcAlias, from_mapping
from wsgate.exceptions import ConfigError
from wsgate.node import Node


def grpc(*targets: dict[str, Any]) -> Any:
    return from_mapping({"grpc": list(targets)}, env={}).grpc


def test_defaults() -> None:
    (target,) = grpc({"target": "127.0.0.1:50051"})
    assert (target.tls, target.ca_file, target.timeout_ms, target.max_concurrency) == (
        False,
        "",
        2000,
        256,
    )
    assert target.discover_every_s == 10.0 and target.aliases == {}


def test_aliases_short_and_long() -> None:
    (target,) = grpc(
        {
            "target": "127.0.0.1:50051",
            "aliases": {
                "modules/LIST": "oswee.module.v1.ModuleService/ListModules",
                "modules/GET": {
                    "method": "oswee.module.v1.ModuleService/GetModule",
                    "reply": "modules/GOT",
                },
            },
        }
    )
    assert target.aliases["modules/LIST"] == "oswee.module.v1.ModuleService/ListModules"
    assert target.aliases["modules/GET"] == GrpcAlias(
        method="oswee.module.v1.ModuleService/GetModule", reply="modules/GOT"
    )


@pytest.mark.parametrize(
    ("targets", "key"),
    [
        ([{"target": "nohost"}], "grpc.0.target"),
        ([{"target": "a:1"}, {"target": "a:1"}], "grpc.1.target"),
        ([{"target": "a:1", "ca_file": "ca.pem"}], "grpc.0.ca_file"),
        ([{"target": "a:1", "timeout_ms": 0}], "grpc.0.timeout_ms"),
        ([{"target": "a:1", "discover_every_s": 0}], "grpc.0.discover_every_s"),
        ([{"target": "a:1", "aliases": {"x/Y": "not a method"}}], "grpc.0.aliases"),
        (
            [{"target": "a:1", "aliases": {"@@wsgate/CONNECT": "p.S/M"}}],
            "grpc.0.aliases.@@wsgate/CONNECT",
        ),
        ([{"target": "a:1", "bogus": 1}], "grpc.0.bogus"),
    ],
)
def test_errors_name_the_key(targets: list[dict[str, Any]], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        grpc(*targets)
    assert caught.value.key.startswith(key), caught.value


def test_the_node_imports_without_the_grpc_extra() -> None:
    code = (
        "import sys\n"
        "for name in ('grpc', 'grpc_reflection', 'google.protobuf', 'google'):\n"
        "    sys.modules[name] = None  # import fails as if not installed\n"
        "import wsgate, wsgate.node, wsgate.cli\n"
        "from wsgate.node import Node\n"
        "from tests.e2e.gateway import make_config\n"
        "Node(make_config())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


def test_an_unreadable_ca_file_stops_the_node_naming_the_key(tmp_path: Path) -> None:
    config = make_config(
        grpc=[{"target": "127.0.0.1:1", "tls": True, "ca_file": str(tmp_path / "no.pem")}]
    )
    with pytest.raises(ConfigError) as caught:
        Node(config)
    assert caught.value.key == "grpc.0.ca_file"
