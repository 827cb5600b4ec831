"""``python -m wsgate.cli ...`` under ``tracemalloc``, with a census on SIGUSR2.

Used by ``idle_memory.py --trace DIR``: the gateway runs with
``tracemalloc.start(FRAMES)`` from its first import, and each SIGUSR2 writes,
after a full ``gc.collect()``:

- ``DIR/snap.<k>``: a tracemalloc snapshot (``tracemalloc.Snapshot.load``);
- ``DIR/types.<k>``: one line per type, ``count<TAB>bytes<TAB>type``, over
  every object the collector tracks plus the objects they refer to directly
  (that catches the untracked ``str``, ``bytes``, ``int`` and ``float`` held by
  them); ``bytes`` is ``sys.getsizeof``, so it leaves out what an object keeps
  outside Python (picows' C buffers are counted by tracemalloc, not here).

Then ``DIR/done.<k>`` appears, so the bench knows the dump is complete.
Environment: ``WSGATE_TRACE_DIR`` (required), ``WSGATE_TRACE_FRAMES`` (default 1).
"""

from __future__ import annotations

import os
import tracemalloc

tracemalloc.start(int(os.environ.get("WSGATE_TRACE_FRAMES", "1")))

import gc  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from types import FrameType  # noqa: E402

_dir = Path(os.environ["WSGATE_TRACE_DIR"])
_k = 0


def _census(path: Path) -> None:
    seen: set[int] = set()
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    tracked = gc.get_objects()
    for obj in tracked:
        for o in (obj, *gc.get_referents(obj)):
            i = id(o)
            if i in seen:
                continue
            seen.add(i)
            t = type(o)
            name = f"{t.__module__}.{t.__qualname__}"
            count[name] += 1
            size[name] += sys.getsizeof(o, 0)
    del tracked
    with path.open("w") as f:
        for name, n in count.most_common():
            f.write(f"{n}\t{size[name]}\t{name}\n")


def _dump(signum: int, frame: FrameType | None) -> None:
    global _k
    gc.collect()
    tracemalloc.take_snapshot().dump(str(_dir / f"snap.{_k}"))
    _census(_dir / f"types.{_k}")
    (_dir / f"done.{_k}").touch()
    _k += 1


signal.signal(signal.SIGUSR2, _dump)

if __name__ == "__main__":
    from wsgate.cli import main

    sys.argv[0] = "wsgate"
    sys.exit(main(sys.argv[1:]))
