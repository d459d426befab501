"""Exclusive file locks, so two runs that reach the same output at once never write it together.

Outputs are content-addressed, so two overlapping runs (a scheduled run starting while the last one
still works, two workers on one shared root) compute identical files under identical names. Each
piece of work ends by writing a marker (a part summary, a manifest); `once` takes a lock beside
that marker, so the first caller does the work and every other one waits, then finds the marker.

`fcntl.flock` locks belong to the open file: a killed process releases its lock, a stale lock file
blocks nobody. On NFS, Linux maps flock to POSIX byte-range locks, which hold across machines.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def lock_path(marker: Path) -> Path:
    return marker.with_name(f".{marker.name.lstrip('.')}.lock")  # hidden, once: `.manifest.json` -> `.manifest.json.lock`


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def once(marker: Path, work: Callable[[], object]) -> None:
    """Run `work` (which writes `marker` last) unless the marker exists; racing callers run it once."""
    if marker.exists():
        return
    with file_lock(lock_path(marker)):
        if not marker.exists():  # another caller may have finished it while we waited
            work()
