"""The C++ gRPC echo of ``bench/procedures.py --grpc-server cpp``: reflected, and it echoes.

Built by ``bench/anchors/build_grpc_echo.sh`` (as the bench builds it on first use); skipped
where the toolchain (g++, protoc, grpc_cpp_plugin, libgrpc++-dev) is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

def _toolchain() -> bool:
    if not all(shutil.which(t) for t in ("g++", "protoc", "grpc_cpp_plugin", "pkg-config")):
        return False
    found = subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"], check=False)
    return found.returncode == 0


pytestmark = [
    pytest.mark.skipif(
        not _toolchain(),
        reason="no C++ gRPC toolchain (apt-get install libgrpc++-dev protobuf-compiler-grpc)",
    ),
    pytest.mark.slow,  # the first run compiles the echo (g++ against gRPC's headers)
    pytest.mark.timeout(240),
]


@pytest.fixture
def echo_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[int]:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("procedures", None)
    import procedures
    from _servers import ServerProcess, free_port

    reason = procedures.cpp_echo_reason()
    assert reason is None, reason
    port = free_port()
    proc = ServerProcess(
        "echo-grpc-cpp", procedures._grpc_echo("cpp", port),
        tmp_path / "echo.log", "listening on ",
    )  # fmt: skip
    try:
        yield port
    finally:
        proc.stop()


async def test_the_cpp_echo_is_reflected_and_answers_the_request(echo_port: int) -> None:
    import grpc.aio

    from wsgate.routing.grpc_channel import Channel
    from wsgate.routing.grpc_h2 import timeout_header
    from wsgate.routing.grpc_reflect import reflect
    from wsgate.routing.grpc_transcode import Method

    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as reflection:
        reflected = await reflect(reflection, 5.0)
    assert list(reflected.methods) == ["bench.v1.Echo/Echo"]
    method = Method(reflected.methods["bench.v1.Echo/Echo"])
    channel = Channel(f"127.0.0.1:{echo_port}")
    try:
        request = method.encode(b'{"pad": "xyz"}').SerializeToString()
        answers = [
            await channel.unary(method.path, request, timeout_header(5.0), 5.0) for _ in range(3)
        ]
    finally:
        await channel.aclose()
    assert [method.decode(method.response.FromString(a)) for a in answers] == [{"pad": "xyz"}] * 3

