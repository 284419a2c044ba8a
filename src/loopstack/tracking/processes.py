"""Is the process that owns a run still alive? Robust against pid reuse.

A pid alone is not an identity: after a crash the same number can belong to
a new process. Pairing it with the process start time makes it one.
"""

from __future__ import annotations

import os

_own_start_times: dict[int, float] = {}


def process_start_time(pid: int) -> float:
    """Start time of a process, in seconds since boot on Linux (epoch elsewhere)."""
    stat = f"/proc/{pid}/stat"
    if os.path.exists(stat):
        with open(stat, "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    import psutil

    return float(psutil.Process(pid).create_time())


def own_start_time() -> float:
    """This process's start time, read once per pid (a forked child has its own pid, so its own entry)."""
    pid = os.getpid()
    started = _own_start_times.get(pid)
    if started is None:
        started = _own_start_times[pid] = process_start_time(pid)
    return started


def is_process_alive(pid: int, started: float) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        if _is_zombie(pid):
            return False
        return abs(process_start_time(pid) - started) < 0.05
    except (OSError, IndexError, ValueError):
        return False


def _is_zombie(pid: int) -> bool:
    """A killed child not yet waited for still answers kill(pid, 0)."""
    stat = f"/proc/{pid}/stat"
    if not os.path.exists(stat):
        return False
    with open(stat, "rb") as handle:
        return handle.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
