"""The dispatcher's upstream hook: called as its own bound ``__call__`` when it has one."""

from __future__ import annotations

from typing import Any

from wsgate.core.dispatch import _direct


class _Hook:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, Any]] = []

    def __call__(self, conn: Any, action: Any) -> bool:
        self.seen.append((conn, action))
        return True


def test_a_callable_instance_is_called_through_its_bound_call() -> None:
    hook = _Hook()
    direct = _direct(hook)
    assert direct is not hook and direct.__self__ is hook  # type: ignore[attr-defined]
    assert direct("c", "a") is True
    assert hook.seen == [("c", "a")]


def test_a_function_is_kept_as_it_is() -> None:
    def hook(conn: Any, action: Any) -> bool:
        return False

    assert _direct(hook) is hook
    bound = _Hook().__call__
    assert _direct(bound) is bound
