"""The tracking spool: rows and run ends a process could not write before it exited, kept in files.

A process that exits (or closes its project) while the metadata database is
away writes what the database did not take to ``<name>.json`` in the
project's ``.loopstack/spool/tracking`` folder, named ``<time_ns>-<pid>``.
The next process that opens the project writes each file in one transaction
(`loopstack.tracking.store.TrackingStore.replay_spool`).

A file is taken with an exclusive ``flock`` on it, so two processes opening
the project at once never both write it, and a process killed mid-replay
leaves no claim behind (the kernel drops the lock). Only names of the spool's
own form are read: anything else in the folder is left alone.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

FORMAT = 1
PARTS = ("metrics", "params", "tags", "artifacts")  # a writer Batch's lists, in order
_NAME = re.compile(r"^(\d+)-(\d+)\.json\Z")


def write(folder: Path, batch: tuple[list[Any], ...], ends: list[dict[str, Any]]) -> Path:
    """Keep `batch` and `ends` in a new spool file of `folder`, whole or not at all; returns it."""
    from loopstack.core.paths import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.time_ns()}-{os.getpid()}.json"
    record = {"format": FORMAT, **dict(zip(PARTS, batch, strict=True)), "ends": ends}
    atomic_write(path, lambda handle: handle.write(json.dumps(record).encode()))
    return path


def files(folder: Path) -> list[Path]:
    """The spool files of `folder`, oldest first (other names are not ours, and are skipped)."""
    if not folder.is_dir():
        return []
    found = [(match, path) for path in folder.iterdir() if (match := _NAME.match(path.name))]
    return [path for match, path in sorted(found, key=lambda pair: (int(pair[0][1]), int(pair[0][2])))]


def read(handle: IO[bytes], path: Path) -> tuple[tuple[list[tuple[Any, ...]], ...], list[dict[str, Any]]]:
    """The batch and run ends of a spool file; ValueError when it is not one."""
    try:
        record = json.loads(handle.read())
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, not {FORMAT}")
        batch = tuple([_row(row, part) for row in record[part]] for part in PARTS)
        ends = [dict(end) for end in record["ends"]]
        for end in ends:
            if not (isinstance(end["run_id"], str) and isinstance(end["status"], str)
                    and isinstance(end["end_time"], int | float)):
                raise ValueError(f"a run end needs run_id, status and end_time, got {end!r:.200}")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a tracking spool file: {error}") from None
    return batch, ends


_WIDTHS = {"metrics": 5, "params": 3, "tags": 3, "artifacts": 5}  # the writer's row tuples (tracking.writer)


def _row(row: Any, part: str) -> tuple[Any, ...]:
    if not isinstance(row, list) or len(row) != _WIDTHS[part] or not isinstance(row[0], str):
        raise ValueError(f"a {part} row must be a list of {_WIDTHS[part]} values starting with a run id, "
                         f"got {row!r:.200}")
    return tuple(row)


@contextmanager
def taken(path: Path) -> Iterator[IO[bytes] | None]:
    """The open file, held under an exclusive lock for the block; None when another process holds it, or it is
    gone (written and removed by another process meanwhile), or it cannot be opened."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        yield None
        return
    with handle:
        if not _lock(handle) or not _still_there(handle, path):
            yield None
            return
        yield handle


def _lock(handle: IO[bytes]) -> bool:
    """An exclusive lock on the open file, released when it is closed (or its process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _still_there(handle: IO[bytes], path: Path) -> bool:
    """Whether `path` is still the file `handle` holds (another process may have written and removed it)."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False
