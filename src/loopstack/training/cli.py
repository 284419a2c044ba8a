"""``loopstack train --nproc N script.py [ARGS]``: run a training script as N data-parallel processes.

Each process gets the variables torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and OMP_NUM_THREADS=1 unless
set; the script calls ``loopstack.training.init_distributed()``. Each rank runs
in a process group of its own: SIGTERM and SIGINT (Ctrl-C) sent to the launcher
are forwarded to every group, so a preempted machine checkpoints on all ranks
and the processes a rank started are signalled with it; when one process fails
the others are stopped. On Linux a rank is killed when the launcher dies, even
by SIGKILL, instead of running on as an orphan, and so is every process it
started (a small guardian process, `loopstack.training._guardian`, kills the
ranks' groups once the launcher is gone). The exit status is
the first non-zero one (143 after a preemption checkpoint), else 0. With
``--timeout S`` a job still running after S seconds (a deadlocked rank fails
nothing) is stopped the same way and exits with 124.

``--launcher ray`` runs the script on N Ray Train workers instead (the ``ray``
extra; on the running Ray cluster, or a local one started for the run): Ray
sets up the process group, which ``init_distributed()`` then joins as it is,
and the script sees the same ``rank()`` and ``world_size()``. A failing rank
fails the run (exit 1, naming the error); its exit status is not forwarded.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

import click

from loopstack.training.distributed import free_port
from loopstack.training.preemption import EXIT_STATUS


def _environment(rank: int, nproc: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


#: ``prctl`` option: the signal the kernel sends a process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _die_with_launcher() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when the launcher dies (Linux); None elsewhere.

    Without it a SIGKILLed launcher (an OOM kill, a scheduler) leaves every rank running, re-parented
    to PID 1 and still writing checkpoints. The launcher's pid is taken here, before the fork: a
    launcher that died before ``prctl`` ran would send no signal, so the child checks for that itself.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    launcher = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != launcher:  # the launcher is already gone
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Send `signum` to the rank's process group: the rank and every process it started."""
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):  # the rank and all it started are gone
        pass


def _start_guardian(preexec: Callable[[], None] | None) -> subprocess.Popen[bytes] | None:
    """The process that kills the ranks' groups if this launcher dies (`loopstack.training._guardian`).

    None where a rank does not die with the launcher either (no `preexec`, not Linux): the guardian
    would only half-close the gap there.
    """
    if preexec is None:
        return None
    from loopstack.training import _guardian

    return subprocess.Popen([sys.executable, "-S", _guardian.__file__], stdin=subprocess.PIPE, process_group=0)


def _tell_guardian(guardian: subprocess.Popen[bytes] | None, line: str) -> None:
    if guardian is None or guardian.stdin is None:
        return
    try:
        guardian.stdin.write(line.encode())
        guardian.stdin.flush()
    except (BrokenPipeError, ValueError):  # it died (someone killed it): the ranks still die with the launcher
        pass


def _forget_empty_groups(guardian: subprocess.Popen[bytes] | None, procs: list[subprocess.Popen[bytes]],
                         watched: set[int]) -> set[int]:
    """Tell the guardian to forget the groups of ranks that exited and left no process behind: their id may be
    reused by an unrelated process, which a later kill must not reach. Returns the groups forgotten."""
    empty = set()
    for proc in procs:
        if proc.pid in watched and proc.returncode is not None and _group_is_empty(proc.pid):
            _tell_guardian(guardian, f"forget {proc.pid}\n")
            empty.add(proc.pid)
    return empty


def _group_is_empty(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a member runs as another user: not empty
        return False
    return False


def _stop_guardian(guardian: subprocess.Popen[bytes] | None) -> None:
    """Close the guardian's input and reap it. An exception out of the launcher (no ``done``) is a crash: as
    after a SIGKILL, the ranks' groups are killed."""
    if guardian is None:
        return
    try:
        if guardian.stdin is not None:
            guardian.stdin.close()
    except BrokenPipeError:
        pass
    try:
        guardian.wait(timeout=10)
    except subprocess.TimeoutExpired:
        guardian.kill()


#: Seconds the other ranks get to exit after SIGTERM once one rank failed, before SIGKILL (torchrun waits 30).
STOP_GRACE_SECONDS = 30.0

#: Exit status of a job stopped by ``--timeout``, as coreutils ``timeout`` reports one.
TIMEOUT_STATUS = 124


def run_processes(
    script: str, args: tuple[str, ...], nproc: int, grace_seconds: float = STOP_GRACE_SECONDS,
    timeout_seconds: float | None = None,
) -> int:
    """Start `nproc` copies of ``python script args``, forward signals, and return the exit status.

    When one rank fails the others get SIGTERM, and SIGKILL after `grace_seconds`: a rank that
    catches SIGTERM to checkpoint may wait forever in a collective for the dead rank. A deadlock
    fails no rank, so only a wall-clock limit ends it: after `timeout_seconds` (None: no limit)
    every rank is stopped the same way and the status is `TIMEOUT_STATUS`.

    After a SIGTERM sent to the launcher (a preemption), a rank that ends with 143 (or -SIGTERM)
    did what it was asked, not fail: the others are left to finish their checkpoint, however long
    its write takes, instead of being killed `grace_seconds` later.
    """
    port = free_port()
    preexec = _die_with_launcher()
    guardian = _start_guardian(preexec)
    # Each rank leads a process group of its own, so a signal reaches what it started (a helper, a
    # data-loading worker) too; the terminal's Ctrl-C then reaches the launcher only, which forwards it.
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for r in range(nproc):
            procs.append(subprocess.Popen([sys.executable, script, *args], env=_environment(r, nproc, port),
                                          process_group=0, preexec_fn=preexec))
            _tell_guardian(guardian, f"{procs[-1].pid}\n")
    except BaseException:  # a rank could not start: the guardian stops the ones that did, as after a crash
        _stop_guardian(guardian)
        raise
    preempted = False  # a SIGTERM came from outside and was forwarded to every rank

    def forward(signum: int, frame: FrameType | None) -> None:
        # Every group, also of a rank that already exited: what it started may still run (a rank's
        # pid is not reused while its group has a member; an empty group is skipped).
        for proc in procs:
            _signal_group(proc, signum)

    def relay(signum: int, frame: FrameType | None) -> None:
        nonlocal preempted
        preempted = preempted or signum == signal.SIGTERM
        forward(signum, frame)

    stopped = (EXIT_STATUS, -signal.SIGTERM)  # a rank that checkpointed and exited, or had no handler
    previous = {sig: signal.signal(sig, relay) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        status, deadline = 0, math.inf
        give_up = math.inf if timeout_seconds is None else time.monotonic() + timeout_seconds
        watched = {proc.pid for proc in procs}  # groups the guardian would kill
        while [p.poll() for p in procs].count(None):  # poll every process: it sets returncode
            watched -= _forget_empty_groups(guardian, procs, watched)
            failed = [p.returncode for p in procs
                      if p.returncode not in (None, 0) and not (preempted and p.returncode in stopped)]
            if status == 0 and (failed or time.monotonic() > give_up):
                status = failed[0] if failed else _timed_out(script, timeout_seconds, grace_seconds)
                deadline = time.monotonic() + grace_seconds
                forward(signal.SIGTERM, None)  # one rank died or hangs: the others would wait for it forever
            if time.monotonic() > deadline:
                forward(signal.SIGKILL, None)
            time.sleep(0.05)
        codes = [p.returncode for p in procs]
        _tell_guardian(guardian, "done\n")  # every rank ended: what one left running was not orphaned by a crash
        return status or next((c for c in codes if c != 0), 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_guardian(guardian)


def _timed_out(script: str, timeout_seconds: float | None, grace_seconds: float) -> int:
    click.echo(f"{script} still running after --timeout {timeout_seconds:g} s (a hung or deadlocked rank?); "
               f"stopping every rank: SIGTERM, then SIGKILL after {grace_seconds:g} s", err=True)
    return TIMEOUT_STATUS


def run_script(script: str, args: tuple[str, ...], cwd: str | None = None) -> None:
    """Run `script` as ``__main__`` with `args` in this process (what each Ray worker does).

    `cwd` is the caller's working folder: Ray starts workers in a session folder of its own, where
    the script's relative paths (its arguments, a checkpoint folder) would point elsewhere.
    """
    import runpy

    if cwd is not None:
        os.chdir(cwd)
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as done:
        if done.code not in (None, 0):
            raise RuntimeError(f"{script} exited with status {done.code}") from None


@click.command("train", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--nproc", type=click.IntRange(1), default=1, show_default=True, help="Processes (one per GPU).")
@click.option("--launcher", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: processes on this machine; ray: Ray Train workers (the `ray` extra).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="Whole-job wall-clock limit in seconds (local launcher); then every rank is stopped and the "
                   f"exit status is {TIMEOUT_STATUS}. Default: no limit.")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(nproc: int, launcher: str, timeout: float | None, script: str, args: tuple[str, ...]) -> None:
    """Run SCRIPT with ARGS as NPROC data-parallel processes (torchrun-compatible environment)."""
    if launcher == "ray":
        if timeout is not None:  # Ray runs the workers; stopping them is its job, not this loop's
            raise click.UsageError("--timeout works with --launcher local only")
        _run_on_ray(script, args, nproc)
        return
    status = run_processes(script, args, nproc, timeout_seconds=timeout)
    if status != 0:
        raise SystemExit(status if status > 0 else 128 - status)


def _run_on_ray(script: str, args: tuple[str, ...], nproc: int) -> None:
    try:
        from loopstack.training.ray import launch_ray
    except ImportError as error:
        raise click.ClickException(f"--launcher ray needs the ray extra ({error}); "
                                   "pip install 'loopstack[ray]'") from None
    path = os.path.abspath(script)  # the same path must exist on every node: nothing ships the file
    try:
        launch_ray(run_script, nproc, args=(path, args, os.getcwd()), roots=[os.path.dirname(path)])
    except Exception as error:  # Ray wraps a rank's failure in its own error types
        last = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        raise click.ClickException(f"the Ray run of {script} failed: {last}") from None


__all__ = ["run_processes", "run_script", "train"]
