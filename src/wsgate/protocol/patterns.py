"""Pattern tables: exact names, ``prefix*`` and the catch-all ``*``.

Action-type routes, relay rules, rate limits and channel rules all match a
name against patterns, the most specific winning: an exact name beats any
prefix, a longer prefix beats a shorter one, ``*`` comes last.

Lookup cost does not grow with the number of patterns: exact names are one
dict probe, and prefixes are probed once per distinct prefix *length*
(bounded by the name's length, not by the table size).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["PatternTable", "pattern_matches"]

T = TypeVar("T")


def pattern_matches(pattern: str, name: str) -> bool:
    """Tell whether ``name`` matches one ``pattern`` (``*`` only at the end)."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name


class PatternTable(Generic[T]):
    """Maps patterns to values; :meth:`lookup` returns the most specific.

    Patterns end in ``*`` for a prefix (``orders/*``, ``*:admin/*``); a ``*``
    anywhere else is taken literally.
    """

    __slots__ = ("_exact", "_lengths", "_prefix")

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        self._exact: dict[str, T] = {}
        self._prefix: dict[str, T] = {}
        self._lengths: list[int] = []
        for pattern, value in items:
            self.add(pattern, value)

    def add(self, pattern: str, value: T) -> None:
        """Add or replace ``pattern``."""
        if pattern.endswith("*"):
            prefix = pattern[:-1]
            self._prefix[prefix] = value
            self._lengths = sorted({len(p) for p in self._prefix}, reverse=True)
        else:
            self._exact[pattern] = value

    def remove(self, pattern: str) -> None:
        """Remove ``pattern`` if present."""
        if pattern.endswith("*"):
            if self._prefix.pop(pattern[:-1], None) is not None:
                self._lengths = sorted({len(p) for p in self._prefix}, reverse=True)
        else:
            self._exact.pop(pattern, None)

    def lookup(self, name: str) -> T | None:
        """Return the value of the most specific pattern matching ``name``."""
        value = self._exact.get(name)
        if value is not None:
            return value
        prefixes = self._prefix
        size = len(name)
        for length in self._lengths:
            if length <= size:
                value = prefixes.get(name[:length])
                if value is not None:
                    return value
        return None

    def match(self, name: str) -> tuple[str, T] | None:
        """Like :meth:`lookup`, with the pattern that matched."""
        value = self._exact.get(name)
        if value is not None:
            return name, value
        size = len(name)
        for length in self._lengths:
            if length <= size:
                prefix = name[:length]
                value = self._prefix.get(prefix)
                if value is not None:
                    return prefix + "*", value
        return None

    def items(self) -> Iterator[tuple[str, T]]:
        """Every ``(pattern, value)``, exact ones first."""
        yield from self._exact.items()
        for prefix, value in self._prefix.items():
            yield prefix + "*", value

    def __len__(self) -> int:
        return len(self._exact) + len(self._prefix)
