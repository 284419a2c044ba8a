"""What a run records without being asked: code, environment, resources, seeds, data.

Everything slow (git, the package list, GPU queries) runs on a background
thread when a run starts, so ``start_run`` returns at once. Resource use is
sampled by another background thread while the run is active.
"""

from __future__ import annotations

import functools
import itertools
import os
import platform
import socket
import sys
import threading
import time
from typing import Any, ClassVar

GIT_TIMEOUT_S = 5.0
HOSTNAME = socket.gethostname()


def git_state(directory: str) -> dict[str, str]:
    """Commit, branch, dirty flag and a hash of the uncommitted diff, or {} outside git or when git fails.

    Git prints branch names and paths as the bytes they are, which need not be
    UTF-8: its output is decoded with replacement, since capture must never
    make a run fail (and a lone surrogate, as surrogateescape would make, is a
    tag value no database can store).
    """
    import hashlib  # this module's slow parts import what they need on the capture thread
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=directory,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=GIT_TIMEOUT_S,
            check=True,
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        branch = git("rev-parse", "--abbrev-ref", "HEAD").strip()
        status = git("status", "--porcelain", "--untracked-files=no")
        diff = git("diff", "HEAD") if status else ""
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        "loopstack.git.commit": commit,
        "loopstack.git.branch": branch,
        "loopstack.git.dirty": str(bool(status)).lower(),
        "loopstack.git.diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else "",
    }


def environment() -> dict[str, Any]:
    """Python, OS, installed packages, CPU and GPU of this process's machine."""
    from importlib.metadata import distributions

    packages = sorted(
        {f"{meta['Name']}=={meta['Version']}" for meta in (d.metadata for d in distributions()) if meta["Name"]}
    )
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_models(),
        "packages": packages,
    }


def environment_tags(env: dict[str, Any]) -> dict[str, str]:
    import hashlib

    return {
        "loopstack.python": env["python"],
        "loopstack.os": env["os"],
        "loopstack.cpu": env["cpu"],
        "loopstack.gpu": ", ".join(env["gpu"]) or "none",
        "loopstack.packages_sha256": hashlib.sha256("\n".join(env["packages"]).encode()).hexdigest(),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_models() -> list[str]:
    import subprocess

    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            errors="replace",  # a name that is not UTF-8 must not fail the capture
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in output.splitlines() if line.strip()]


class ResourceSampler:
    """Peak RSS, CPU time and GPU memory of this process while one run is active.

    One daemon thread per process samples for every active run (a thread per
    run would cost more than the sampling); a run's sampler is a handle that
    keeps its own peaks. Peak RSS also comes from the kernel's high-water
    mark, so a spike between two samples is not missed.
    """

    _handles: ClassVar[set[ResourceSampler]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _thread: ClassVar[threading.Thread | None] = None
    _interval_s: ClassVar[float] = 1.0

    def __init__(self, interval_s: float) -> None:
        self.peak_rss = 0
        self.peak_gpu_bytes = 0
        self._cpu_start = _cpu_seconds()
        self._sample()
        with ResourceSampler._lock:
            ResourceSampler._interval_s = min(ResourceSampler._interval_s, interval_s)
            ResourceSampler._handles.add(self)
            thread = ResourceSampler._thread
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=ResourceSampler._run, name="loopstack-resources", daemon=True)
                ResourceSampler._thread = thread
                thread.start()

    @classmethod
    def _run(cls) -> None:
        while True:
            time.sleep(cls._interval_s)
            with cls._lock:
                handles = list(cls._handles)
            if handles:
                rss, gpu = (0 if _has_kernel_peak_rss() else _rss_bytes()), _gpu_bytes()
                for handle in handles:
                    handle.peak_rss = max(handle.peak_rss, rss)
                    handle.peak_gpu_bytes = max(handle.peak_gpu_bytes, gpu)

    def _sample(self) -> None:
        if not _has_kernel_peak_rss():  # the kernel's high-water mark bounds every sample
            self.peak_rss = max(self.peak_rss, _rss_bytes())
        self.peak_gpu_bytes = max(self.peak_gpu_bytes, _gpu_bytes())

    def stop(self) -> dict[str, float]:
        with ResourceSampler._lock:
            ResourceSampler._handles.discard(self)
        self._sample()
        summary = {
            "system.peak_rss_mb": max(self.peak_rss, _kernel_peak_rss()) / 2**20,
            "system.cpu_time_s": _cpu_seconds() - self._cpu_start,
        }
        if self.peak_gpu_bytes:
            summary["system.gpu_peak_memory_mb"] = self.peak_gpu_bytes / 2**20
        return summary


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


@functools.cache
def _has_kernel_peak_rss() -> bool:
    """Whether the kernel reports peak RSS (Linux, macOS): then sampling RSS adds nothing."""
    return _kernel_peak_rss() > 0


def _kernel_peak_rss() -> int:
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except ImportError:
        return 0


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _gpu_bytes() -> int:
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    try:
        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
    except Exception:  # a broken CUDA setup must not break the run
        return 0
    return 0


def step_timing(first_seen: dict[int, float]) -> dict[str, float]:
    """Mean and median seconds between consecutive logged steps."""
    if len(first_seen) < 2:
        return {}
    times = [first_seen[step] for step in sorted(first_seen)]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return {
        "system.step_time_mean_s": sum(gaps) / len(gaps),
        "system.step_time_p50_s": gaps[len(gaps) // 2],
        "system.steps": float(len(first_seen)),
    }
