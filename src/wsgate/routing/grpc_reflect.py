"""gRPC server reflection, client side: what a target serves, as descriptors.

:func:`reflect` asks a target, over one ``grpc.aio`` channel, for its
services (``list_services``), then for the file that defines each
(``file_containing_symbol``), which the server sends with its transitive
dependencies; a dependency still missing is asked for by name
(``file_by_filename``). The files go, dependencies first, into a fresh
:class:`~google.protobuf.descriptor_pool.DescriptorPool` of this round, so
a target that restarted with other messages never meets the old ones.

Guarantees: one reflection stream per call, closed on return (cancelled on
error); at most :data:`MAX_FILES` files are fetched and kept; the
reflection services themselves are left out. Errors raise
:class:`ReflectionFailed` (with the reason, for the log). This module
imports ``grpc`` at call time, so ``import wsgate`` works without the
``grpc`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import grpc.aio

__all__ = ["MAX_FILES", "Reflected", "ReflectionFailed", "reflect"]

MAX_FILES: Final = 512
"""Most descriptor files one target's reflection may bring (its services and their imports)."""

_REFLECTION_SERVICES: Final = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)


class ReflectionFailed(Exception):
    """The target could not be reflected; the message is for the log only."""


@dataclass(frozen=True)
class Reflected:
    """One reflection round's outcome for a target."""

    pool: Any
    """The :class:`~google.protobuf.descriptor_pool.DescriptorPool` holding the target's files."""
    methods: dict[str, Any]
    """``<package>.<Service>/<Method>`` -> its ``MethodDescriptor``, in the server's order."""


async def reflect(channel: grpc.aio.Channel, timeout_s: float) -> Reflected:
    """Reflect the target behind ``channel``; the whole exchange takes at most ``timeout_s``.

    Raises :class:`ReflectionFailed` when the target is unreachable, has no
    reflection service, or sends descriptors that do not build.
    """
    import grpc
    from google.protobuf import descriptor_pb2, descriptor_pool
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=timeout_s)
    files: dict[str, Any] = {}
    """File name -> its FileDescriptorProto; bounded by MAX_FILES."""

    async def ask(**request: Any) -> Any:
        await call.write(reflection_pb2.ServerReflectionRequest(**request))
        response = await call.read()
        if response is grpc.aio.EOF:
            raise ReflectionFailed("reflection stream ended early")
        if response.HasField("error_response"):
            raise ReflectionFailed(f"reflection refused {request}: {response.error_response}")
        return response

    def keep(response: Any) -> None:
        for blob in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
            if proto.name not in files:
                if len(files) >= MAX_FILES:
                    raise ReflectionFailed(f"more than {MAX_FILES} descriptor files")
                files[proto.name] = proto

    try:
        listed = await ask(list_services="")
        names = [
            s.name
            for s in listed.list_services_response.service
            if s.name not in _REFLECTION_SERVICES
        ]
        for name in names:
            keep(await ask(file_containing_symbol=name))
        missing = _missing(files)
        for _ in range(MAX_FILES):  # each round adds at least one file or stops
            if not missing:
                break
            for name in missing:
                keep(await ask(file_by_filename=name))
            missing = _missing(files)
        await call.done_writing()
    except grpc.aio.AioRpcError as exc:
        raise ReflectionFailed(f"reflection failed: {exc.code().name}: {exc.details()}") from None
    finally:
        call.cancel()  # a no-op once the call ended; frees the stream otherwise
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    try:
        for name in files:
            _add(pool, files, name, added, ())
        methods: dict[str, Any] = {}
        for name in names:
            service = pool.FindServiceByName(name)
            for method in service.methods:
                methods[f"{service.full_name}/{method.name}"] = method
    except (TypeError, KeyError, ValueError) as exc:
        raise ReflectionFailed(f"descriptors do not build: {exc}") from None
    return Reflected(pool, methods)


def _missing(files: dict[str, Any]) -> list[str]:
    """Dependencies named by the fetched files and not fetched yet."""
    return sorted({dep for f in files.values() for dep in f.dependency if dep not in files})


def _add(
    pool: Any, files: dict[str, Any], name: str, added: set[str], chain: tuple[str, ...]
) -> None:
    """Add ``name`` to ``pool`` after its dependencies (depth bounded by the file count)."""
    if name in added:
        return
    if name in chain or len(chain) > len(files):
        raise ValueError(f"import cycle through {name}")
    proto = files.get(name)
    if proto is None:
        raise KeyError(f"missing dependency {name}")
    for dep in proto.dependency:
        _add(pool, files, dep, added, (*chain, name))
    pool.Add(proto)
    added.add(name)
