"""Checkpoints: atomic writes, retention, exact resume, SIGTERM, tracked as run artifacts."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.training.conftest import TINY, same, tokens, weights  # noqa: E402

import loopstack as ls  # noqa: E402
from loopstack.core.errors import NotFoundError  # noqa: E402
from loopstack.core.project import Project  # noqa: E402
from loopstack.training import (  # noqa: E402
    CheckpointManager,
    Preempted,
    ResumableLoader,
    TinyTransformer,
    TrainConfig,
    atomic_write,
    fit,
    lm_loss,
    seed_everything,
)


def _job(seed: int = 5) -> tuple[torch.nn.Module, torch.optim.Optimizer, object, ResumableLoader]:
    """A job that uses every kind of state: dropout (RNG), Adam moments, a schedule, shuffling."""
    seed_everything(seed, deterministic=True)
    model = TinyTransformer(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    loader = ResumableLoader((tokens(40),), 8, seed=seed)  # 5 batches an epoch: resume crosses epochs
    return model, optimizer, scheduler, loader


def _fit(directory: Path | None, steps: int, **kw: object) -> tuple[torch.nn.Module, object]:
    model, optimizer, scheduler, loader = _job()
    manager = CheckpointManager(directory, keep_last=2, track=False) if directory else None
    result = fit(model, optimizer, loader, lm_loss, TrainConfig(steps=steps, **kw), scheduler=scheduler,
                 checkpoints=manager)
    return model, result


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path: Path) -> None:
    uninterrupted, _ = _fit(None, 12)
    _fit(tmp_path, 7)  # the "first machine" stops after step 7
    # A fresh process would rebuild everything from scratch (and draw different random numbers
    # before resuming); the checkpoint must restore all of it.
    torch.manual_seed(999)
    resumed, result = _fit(tmp_path, 12)
    assert result.resumed_from == 7 and result.step == 12 and len(result.losses) == 5
    assert same(weights(uninterrupted), weights(resumed))


def test_sigterm_checkpoints_the_finished_step_then_exits_143(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)  # another test (Ray, uvicorn) may have installed one
    model, optimizer, scheduler, loader = _job()
    manager = CheckpointManager(tmp_path, track=False)

    def preempt(step: int, loss: float) -> None:
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted) as stopped:
        fit(model, optimizer, loader, lm_loss, TrainConfig(steps=10), scheduler=scheduler, checkpoints=manager,
            on_step=preempt)
    assert stopped.value.step == 4 and stopped.value.code == 143
    assert manager.latest().step == 4
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored
    resumed, result = _fit(tmp_path, 10)
    assert result.resumed_from == 4
    assert same(weights(resumed), weights(_fit(None, 10)[0]))


def test_keeps_last_k_and_best_and_deletes_the_rest(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    manager = CheckpointManager(tmp_path, keep_last=2, keep_best=1, track=False)
    for step, loss in [(1, 0.9), (2, 0.1), (3, 0.5), (4, 0.7), (5, 0.6)]:
        manager.save(step, model, metric=loss)
    assert [c.step for c in manager.checkpoints()] == [2, 4, 5]
    assert manager.best().step == 2 and manager.latest().step == 5
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step-000000002.pt", "step-000000004.pt",
                                                             "step-000000005.pt"]
    assert manager.load("best")["metric"] == 0.1
    maximizing = CheckpointManager(tmp_path / "max", keep_last=1, metric_mode="max", track=False)
    for step, acc in [(1, 0.5), (2, 0.9), (3, 0.7)]:
        maximizing.save(step, model, metric=acc)
    assert [c.step for c in maximizing.checkpoints()] == [2, 3]
    with pytest.raises(NotFoundError, match="no checkpoint"):
        CheckpointManager(tmp_path / "empty").load()


def test_a_write_that_dies_midway_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    atomic_write(target, lambda f: f.write(b"old and complete"))

    def crash(handle: object) -> None:
        handle.write(b"new but")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # the process is killed halfway through

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old and complete"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left behind


def test_checkpoints_are_artifacts_of_the_active_run(sqlite_project: Project, tmp_path: Path) -> None:
    model, optimizer, scheduler, loader = _job()
    with ls.start_run(project=sqlite_project) as run:
        fit(model, optimizer, loader, lm_loss, TrainConfig(steps=4, checkpoint_every=2), scheduler=scheduler,
            checkpoints=CheckpointManager(tmp_path / "ckpt"))
    client = ls.Client(sqlite_project)
    paths = {a["path"] for a in client.list_artifacts(run.id)}
    assert {"checkpoints/step-000000002.pt", "checkpoints/step-000000004.pt"} <= paths
    stored = torch.load(tmp_path / "ckpt" / "step-000000004.pt", weights_only=False)
    assert client.read_artifact(run.id, "checkpoints/step-000000004.pt") == (
        tmp_path / "ckpt" / "step-000000004.pt"
    ).read_bytes()
    assert stored["loader"]["position"] == 4 and stored["step"] == 4
    history = client.get_metric_history(run.id, "train.loss")
    assert [m.step for m in history] == [1, 2, 3, 4]


def test_restore_names_a_step_or_file_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    manager = CheckpointManager(tmp_path, keep_last=3, track=False)
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(step)
        manager.save(step, model, metric=float(step))
    assert manager.restore(model, which=2)["step"] == 2 and model.weight[0, 0].item() == 2.0
    assert manager.load("step-000000001.pt")["step"] == 1
    assert manager.load("latest")["step"] == 3
    # A typo used to restore the latest checkpoint without a word.
    with pytest.raises(NotFoundError, match=r"no checkpoint 'step-2\.pt'.*1 \(step-000000001\.pt\)"):
        manager.restore(model, which="step-2.pt")
    with pytest.raises(NotFoundError, match="no checkpoint 7"):
        manager.load(7)


KILLED_MID_SAVE = """
import os, signal, sys, torch
from loopstack.training import CheckpointManager

manager = CheckpointManager(sys.argv[1], track=False)
model = torch.nn.Linear(64, 64)
manager.save(1, model)

def dying_save(obj, handle):
    handle.write(b"half a checkpoint")
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dying_save
manager.save(2, model)
"""


def test_kill_9_mid_save_keeps_the_last_checkpoint_and_the_next_save_clears_the_debris(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(KILLED_MID_SAVE)
    directory = tmp_path / "ckpt"
    done = subprocess.run([sys.executable, str(script), str(directory)], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(list(directory.glob(".step-000000002.pt.*.tmp"))) == 1  # what kill -9 leaves behind
    manager = CheckpointManager(directory, track=False)
    assert [c.step for c in manager.checkpoints()] == [1] and manager.load()["step"] == 1  # intact, resumable
    manager.save(2, torch.nn.Linear(64, 64))
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoints.json", "step-000000001.pt",
                                                           "step-000000002.pt"]


def test_resuming_with_a_loader_that_keeps_no_position_is_refused_or_said(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A plain list of batches cannot take the saved loader position (it raised AttributeError), and one
    resumed from a checkpoint without a loader position starts its data over, silently."""
    from loopstack.core.errors import ConfigError

    _fit(tmp_path / "resumable", 3)  # saved with a ResumableLoader's position
    model, optimizer, scheduler, _ = _job()
    batches = [(tokens(8),)] * 3
    manager = CheckpointManager(tmp_path / "resumable", keep_last=2, track=False)
    with pytest.raises(ConfigError, match="cannot take it; resume with a ResumableLoader"):
        fit(model, optimizer, batches, lm_loss, TrainConfig(steps=5), scheduler=scheduler, checkpoints=manager)

    plain = CheckpointManager(tmp_path / "plain", keep_last=2, track=False)
    model, optimizer, scheduler, _ = _job()
    fit(model, optimizer, batches, lm_loss, TrainConfig(steps=2), scheduler=scheduler, checkpoints=plain)
    model, optimizer, scheduler, _ = _job()
    with caplog.at_level("WARNING", logger="loopstack.training"):
        result = fit(model, optimizer, batches, lm_loss, TrainConfig(steps=3), scheduler=scheduler, checkpoints=plain)
    assert result.resumed_from == 2 and "its data starts again from the first batch" in caplog.text


class _StartsAtIter:
    """A stateful loader that fixes its start when iter() is called, as DataLoader and StatefulDataLoader do."""

    def __init__(self, batches: list[tuple[torch.Tensor]]) -> None:
        self.batches, self.position = batches, 0

    def __iter__(self) -> object:
        return self._read(self.position % len(self.batches))  # the start is taken now, not at the first next()

    def _read(self, start: int) -> object:
        for index in range(start, len(self.batches)):
            self.position = index + 1
            yield self.batches[index]
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = state["position"]


def test_a_loader_that_fixes_its_position_at_iter_resumes_where_it_stopped(tmp_path: Path) -> None:
    """fit called iter() before restoring the position, so the resumed run read the first batches again."""
    batches = [(tokens(8, seed=i),) for i in range(8)]

    def run(steps: int, manager: CheckpointManager | None) -> list[float]:
        model, optimizer, scheduler, _ = _job()
        return fit(model, optimizer, _StartsAtIter(batches), lm_loss, TrainConfig(steps=steps), scheduler=scheduler,
                   checkpoints=manager).losses

    uninterrupted = run(10, None)
    run(3, CheckpointManager(tmp_path, track=False))
    resumed = run(10, CheckpointManager(tmp_path, track=False))
    assert resumed == uninterrupted[3:]


def test_resuming_with_another_optimizer_or_scheduler_class_is_refused(tmp_path: Path) -> None:
    from loopstack.core.errors import ConfigError

    model = torch.nn.Linear(2, 1)
    adamw = torch.optim.AdamW(model.parameters(), lr=0.1)
    step_lr = torch.optim.lr_scheduler.StepLR(adamw, step_size=3)
    model(torch.ones(1, 2)).sum().backward()
    adamw.step()
    manager = CheckpointManager(tmp_path, track=False)
    manager.save(1, model, adamw, step_lr)

    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # was: loaded, then the next step failed with KeyError 'momentum'
    with pytest.raises(ConfigError, match="AdamW optimizer, but the optimizer given now is a SGD"):
        manager.restore(model, sgd, torch.optim.lr_scheduler.StepLR(sgd, step_size=3))
    adamw2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(adamw2, T_max=10)
    # was: taken silently
    with pytest.raises(ConfigError, match="StepLR scheduler, but the scheduler given now is a CosineAnnealingLR"):
        manager.restore(model, adamw2, cosine)
    assert manager.restore(model, adamw2, torch.optim.lr_scheduler.StepLR(adamw2, step_size=3))["step"] == 1

    old = manager.load()  # a checkpoint written before the classes were recorded still loads
    del old["classes"]
    torch.save(old, tmp_path / manager.latest().path)
    assert manager.restore(model, adamw2, cosine)["step"] == 1
