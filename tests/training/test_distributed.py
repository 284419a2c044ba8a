"""DDP over gloo with 2 CPU processes: ranks agree after every step and match one process on the whole batch."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from tests.training.conftest import TINY, tokens  # noqa: E402

from loopstack.training import (  # noqa: E402
    ResumableLoader,
    TinyTransformer,
    TrainConfig,
    fit,
    launch,
    lm_loss,
    seed_everything,
    wrap,
)
from loopstack.training.cli import train  # noqa: E402

STEPS, PER_RANK = 4, 4
NODROP = TINY.with_(dropout=False)  # dropout masks differ per rank by design; keep the math comparable


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in getattr(model, "module", model).parameters()])


def _ddp_job(strategy: str = "ddp") -> dict[str, object]:
    import torch.distributed as dist

    from loopstack.training import rank, world_size

    seed_everything(0)
    model = wrap(TinyTransformer(NODROP), strategy)  # type: ignore[arg-type]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = ResumableLoader((tokens(64),), PER_RANK, shuffle=False, rank=rank(), world_size=world_size())
    agree = []

    def check(step: int, loss: float) -> None:
        mine = _flat(model)
        everyone = [torch.empty_like(mine) for _ in range(world_size())]
        dist.all_gather(everyone, mine)
        agree.append(all(torch.equal(everyone[0], w) for w in everyone))

    fit(model, optimizer, loader, lm_loss, TrainConfig(steps=STEPS), on_step=check)
    return {"rank": rank(), "agree": agree, "weights": _flat(model)}


def test_two_process_ddp_matches_single_process_on_the_concatenated_batch() -> None:
    results = launch(_ddp_job, nproc=2)
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["agree"] == [True] * STEPS for r in results)  # equal across ranks after every step
    assert torch.equal(results[0]["weights"], results[1]["weights"])
    # One process, batches twice as large (rank 0's and rank 1's samples together).
    seed_everything(0)
    single = TinyTransformer(NODROP)
    optimizer = torch.optim.SGD(single.parameters(), lr=0.5)
    fit(single, optimizer, ResumableLoader((tokens(64),), 2 * PER_RANK, shuffle=False), lm_loss,
        TrainConfig(steps=STEPS))
    # All-reduce sums in a different order than one big batch: equal up to float rounding.
    torch.testing.assert_close(results[0]["weights"], _flat(single), rtol=1e-5, atol=1e-6)
    untrained = _flat(TinyTransformer(NODROP))
    assert not torch.allclose(untrained, _flat(single))


def test_gradient_accumulation_equals_the_large_batch() -> None:
    runs = []
    for batch, accumulation in [(16, 1), (4, 4)]:
        seed_everything(0)
        model = TinyTransformer(NODROP)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        fit(model, optimizer, ResumableLoader((tokens(64),), batch, shuffle=False), lm_loss,
            TrainConfig(steps=3, grad_accumulation=accumulation))
        runs.append(_flat(model))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)


def _preempted_ddp_job(directory: str) -> dict[str, object]:
    import os
    import signal

    from loopstack.training import CheckpointManager, Preempted, rank, world_size

    seed_everything(0)
    model = wrap(TinyTransformer(NODROP))
    loader = ResumableLoader((tokens(64),), PER_RANK, rank=rank(), world_size=world_size())

    def on_step(step: int, loss: float) -> None:
        if step == 3 and rank() == 1:  # only rank 1's machine is told; both must stop at the same step
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, lm_loss, TrainConfig(steps=50),
            checkpoints=CheckpointManager(directory, track=False), on_step=on_step)
    except Preempted as stopped:
        return {"stopped_at": stopped.step, "code": stopped.code}
    return {"stopped_at": None}


def test_sigterm_on_one_rank_checkpoints_and_stops_every_rank(tmp_path: Path) -> None:
    results = launch(_preempted_ddp_job, nproc=2, args=(str(tmp_path),))
    assert results == [{"stopped_at": 3, "code": 143}] * 2
    saved = torch.load(tmp_path / "step-000000003.pt", weights_only=False)
    assert saved["step"] == 3 and len(saved["rng"]) == 2  # every rank's RNG state is kept
    assert saved["loader"] == {"epoch": 0, "position": 3, "seed": 0, "world_size": 2, "batch_size": PER_RANK,
                               "size": 64, "shuffle": 1}


SCRIPT = """
import json, os, signal, sys, time
rank = int(os.environ["RANK"])
keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({k: os.environ[k] for k in keys} | {"args": sys.argv[2:]}, f)
if rank == 1:
    os.kill(os.getpid(), signal.SIGTERM)  # rank 1 is preempted: the launcher stops rank 0 too
time.sleep(30)
"""


def test_train_command_sets_the_torchrun_environment_and_propagates_preemption(tmp_path: Path) -> None:
    import json
    import time

    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT))
    started = time.perf_counter()
    result = CliRunner().invoke(train, ["--nproc", "2", str(script), str(tmp_path), "--lr", "0.1"])
    assert result.exit_code == 128 + 15, result.output  # -SIGTERM reported as 143, like a shell
    assert time.perf_counter() - started < 20  # rank 0 was stopped, not waited for
    envs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"] and envs[0]["OMP_NUM_THREADS"] == "1"
    assert envs[0]["args"] == ["--lr", "0.1"]


def test_train_command_reports_a_failing_script(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("import sys\nsys.exit(3)\n")
    assert CliRunner().invoke(train, ["--nproc", "2", str(script)]).exit_code == 3


def _sharded_job(strategy: str) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    from loopstack.training import rank, world_size

    seed_everything(0)
    model = wrap(TinyTransformer(NODROP), strategy)  # type: ignore[arg-type]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = ResumableLoader((tokens(64),), PER_RANK, shuffle=False, rank=rank(), world_size=world_size())
    fit(model, optimizer, loader, lm_loss, TrainConfig(steps=3))
    full = [(p.full_tensor() if isinstance(p, DTensor) else p).detach().reshape(-1) for p in model.parameters()]
    return torch.cat(full)


def test_fsdp_full_shard_trains_like_ddp() -> None:
    fsdp = launch(_sharded_job, nproc=2, args=("fsdp",))
    ddp = launch(_sharded_job, nproc=2, args=("ddp",))
    assert torch.equal(fsdp[0], fsdp[1])
    torch.testing.assert_close(fsdp[0], ddp[0], rtol=1e-5, atol=1e-6)


STUBBORN = """
import os, signal, sys, time
if os.environ["RANK"] == "1":
    sys.exit("rank 1 failed")  # exit status 1
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # like a rank that catches SIGTERM to checkpoint, then blocks
time.sleep(120)
"""


def test_a_rank_that_ignores_sigterm_after_another_failed_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    import time

    from loopstack.training.cli import run_processes

    script = tmp_path / "stubborn.py"
    script.write_text(textwrap.dedent(STUBBORN))
    started = time.perf_counter()
    assert run_processes(str(script), (), 2, grace_seconds=1.0) == 1  # the failing rank's status, not -9
    assert time.perf_counter() - started < 30  # was: waited for rank 0 forever


HUNG = """
import os, signal, time
if os.environ["RANK"] == "0":
    raise SystemExit(0)  # rank 0 finished; rank 1 waits on it in a collective forever, failing nothing
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(120)
"""


def test_a_deadlocked_rank_is_stopped_at_the_timeout_and_the_job_fails(tmp_path: Path) -> None:
    import time

    from loopstack.training.cli import TIMEOUT_STATUS, run_processes

    script = tmp_path / "hung.py"
    script.write_text(textwrap.dedent(HUNG))
    started = time.perf_counter()
    assert run_processes(str(script), (), 2, grace_seconds=0.5, timeout_seconds=1.0) == TIMEOUT_STATUS
    assert time.perf_counter() - started < 30  # was: waited for rank 1 forever (SIGTERM ignored: SIGKILL)


def test_train_timeout_stops_every_rank_and_says_why(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(120)\n")
    result = CliRunner().invoke(train, ["--nproc", "2", "--timeout", "1", str(script)])
    assert result.exit_code == 124, result.output
    assert "still running after --timeout 1 s" in result.output and "stopping every rank" in result.output
    refused = CliRunner().invoke(train, ["--launcher", "ray", "--timeout", "1", str(script)])
    assert refused.exit_code == 2 and "--launcher local only" in refused.output


def _gpu_seconds_job() -> dict[str, float]:
    """A job whose one device per process is faked: what rank 0 records for the whole job."""
    from loopstack.training import gpu

    class OneDevicePerProcess(gpu.CudaProbe):
        def available(self) -> bool:
            return True

        def name(self) -> str:
            return "NVIDIA H100 80GB HBM3"

        def reset_peak(self) -> None:
            pass

        def peak_bytes(self) -> int:
            return 1

    with gpu.GpuUsage(OneDevicePerProcess()) as usage:
        pass
    usage.seconds = 3600.0  # one hour of the job, so the cost is the hourly price times the devices
    return {k: v for k, v in usage.summary().items() if k != "gpu.type"}


def test_a_data_parallel_job_pays_for_every_process_device() -> None:
    from loopstack.economics import default_prices

    hourly = default_prices().gpu("H100-80GB").hourly("on_demand")
    for summary in launch(_gpu_seconds_job, nproc=2):
        assert summary["gpu.count"] == 2
        assert summary["gpu.seconds"] == pytest.approx(7200.0)
        assert summary["gpu.cost"] == pytest.approx(2 * hourly)


def _slow_save_job(directory: str) -> list[int]:
    """Every rank saves while rank 0's write takes a second: what each rank sees when `save` returns."""
    import time

    from loopstack.training import CheckpointManager, checkpoint

    written = checkpoint.atomic_write

    def slow(path: Path, write: object) -> None:
        if path.suffix == ".pt":
            time.sleep(1.0)  # a large checkpoint
        written(path, write)

    checkpoint.atomic_write = slow  # this worker process's copy only
    manager = CheckpointManager(directory, track=False)
    manager.save(1, torch.nn.Linear(2, 1))
    return [c.step for c in manager.checkpoints() if (Path(directory) / c.path).exists()]


def test_every_rank_leaves_save_only_after_rank_0_wrote_the_checkpoint(tmp_path: Path) -> None:
    # was: rank 1 returned at once and exited 143 on SIGTERM, and the launcher killed rank 0 mid-write
    assert launch(_slow_save_job, nproc=2, args=(str(tmp_path),)) == [[1], [1]]


PREEMPTED = """
import os, signal, sys, time
from pathlib import Path
folder, rank = Path(sys.argv[1]), os.environ["RANK"]
asked = []
if rank == "1":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # its part of the checkpoint is done: it exits
else:
    signal.signal(signal.SIGTERM, lambda *_: asked.append(1))  # rank 0 still writes the checkpoint
(folder / f"ready{rank}").touch()
for _ in range(300):
    if asked:
        time.sleep(2.0)  # a write longer than the grace period
        (folder / "written").touch()
        sys.exit(143)
    time.sleep(0.05)
"""


def test_a_forwarded_sigterm_leaves_rank_0_to_finish_its_checkpoint(tmp_path: Path) -> None:
    import os
    import signal
    import threading
    import time

    from loopstack.training.cli import run_processes

    script = tmp_path / "preempted.py"
    script.write_text(textwrap.dedent(PREEMPTED))

    def preempt_the_launcher() -> None:  # as the cloud does, once both ranks handle SIGTERM
        for _ in range(300):
            if (tmp_path / "ready0").exists() and (tmp_path / "ready1").exists():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=preempt_the_launcher, daemon=True).start()
    assert run_processes(str(script), (str(tmp_path),), 2, grace_seconds=0.5) == 143
    assert (tmp_path / "written").exists()  # was: rank 1's 143 counted as a failure, rank 0 killed after 0.5 s


def _alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie (dead, not yet reaped by whoever adopted it) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    import time

    limit = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < limit:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


SPAWNER = """
import os, subprocess, sys, time
from pathlib import Path
folder, rank = Path(sys.argv[1]), os.environ["RANK"]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a helper / loader worker
(folder / f"pids{rank}").write_text(f"{os.getpid()} {child.pid}")
time.sleep(120)
"""


def _started(folder: Path, nproc: int = 2) -> list[int]:
    import time

    files = [folder / f"pids{r}" for r in range(nproc)]
    for _ in range(600):
        if all(f.exists() and f.read_text() for f in files):
            return [int(p) for f in files for p in f.read_text().split()]
        time.sleep(0.05)
    raise AssertionError("the ranks did not start")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_ranks_and_what_they_started_die_with_a_killed_launcher(tmp_path: Path) -> None:
    import signal
    import subprocess

    script = tmp_path / "spawner.py"
    script.write_text(textwrap.dedent(SPAWNER))
    launcher = subprocess.Popen([sys.executable, "-c", "from loopstack.training.cli import train; train()",
                                 "--nproc", "2", str(script), str(tmp_path)])
    try:
        pids = _started(tmp_path)
    finally:
        launcher.send_signal(signal.SIGKILL)  # an OOM kill: nothing of the launcher runs after it
        launcher.wait()
    ranks, children = pids[0::2], pids[1::2]
    try:
        # was: both ranks re-parented to PID 1, still running (and writing checkpoints)
        assert _wait_gone(ranks, 5.0) == []
        assert _wait_gone(children, 5.0) == []  # was: what a rank started outlived it, re-parented to PID 1
    finally:
        for pid in ranks + children:  # this test's own processes, by pid
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["timeout", "sigterm", "sigint"])
def test_the_processes_a_rank_started_are_stopped_with_it(tmp_path: Path, how: str) -> None:
    import signal
    import threading

    from loopstack.training.cli import TIMEOUT_STATUS, run_processes

    script = tmp_path / "spawner.py"
    script.write_text(textwrap.dedent(SPAWNER))
    sent = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}.get(how)

    def stop_the_launcher() -> None:
        _started(tmp_path)
        os.kill(os.getpid(), sent)  # a preemption, or Ctrl-C (the ranks' own group no longer gets the terminal's)

    if sent is not None:
        threading.Thread(target=stop_the_launcher, daemon=True).start()
    status = run_processes(str(script), (str(tmp_path),), 2, grace_seconds=5.0,
                           timeout_seconds=3.0 if how == "timeout" else 60.0)
    pids = _started(tmp_path)
    try:
        assert status == {"timeout": TIMEOUT_STATUS, "sigterm": -signal.SIGTERM, "sigint": -signal.SIGINT}[how]
        assert _wait_gone(pids, 5.0) == []  # was: the rank's child ran on, re-parented to PID 1
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups")
def test_the_guardian_forgets_a_rank_whose_group_emptied() -> None:
    """A rank that exited early left its group id with the guardian; once the id was reused by an unrelated
    process, a later SIGKILL of the launcher killed that process's group."""
    import io
    import subprocess
    import types

    from loopstack.training.cli import _forget_empty_groups

    done = subprocess.Popen([sys.executable, "-c", "pass"], process_group=0)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], process_group=0)
    try:
        done.wait()
        running.poll()
        guardian = types.SimpleNamespace(stdin=io.BytesIO())
        watched = {done.pid, running.pid}
        assert _forget_empty_groups(guardian, [done, running], watched) == {done.pid}  # type: ignore[arg-type]
        assert guardian.stdin.getvalue() == f"forget {done.pid}\n".encode()
    finally:
        running.kill()
        running.wait()
