"""FSDP checkpoints hold every rank's shards: a 2-process FSDP run stopped and resumed ends as one never stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.fsdp")

from tests.training.conftest import TINY, tokens  # noqa: E402

from loopstack.training import (  # noqa: E402
    CheckpointManager,
    ResumableLoader,
    TinyTransformer,
    TrainConfig,
    fit,
    launch,
    lm_loss,
    seed_everything,
    wrap,
)

NODROP = TINY.with_(dropout=False)
STEPS = 6


def _full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def _fsdp_job(folder: str | None, steps: int) -> dict[str, object]:
    from loopstack.training import rank, world_size

    seed_everything(0)
    model = wrap(TinyTransformer(NODROP), "fsdp")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    loader = ResumableLoader((tokens(48),), 4, seed=1, rank=rank(), world_size=world_size())
    checkpoints = CheckpointManager(folder, track=False) if folder else None
    result = fit(model, optimizer, loader, lm_loss, TrainConfig(steps=steps), scheduler=scheduler,
                 checkpoints=checkpoints)
    return {"weights": _full_weights(model), "resumed_from": result.resumed_from}


def test_fsdp_run_stopped_and_resumed_ends_with_the_same_weights(tmp_path: Path) -> None:
    straight = launch(_fsdp_job, nproc=2, args=(None, STEPS))
    folder = str(tmp_path / "ckpt")
    launch(_fsdp_job, nproc=2, args=(folder, 3))  # "preempted" after step 3
    saved = CheckpointManager(folder, track=False).load()
    # The file holds the whole model, not rank 0's shards: every tensor has its full shape.
    shapes = {k: tuple(v.shape) for k, v in TinyTransformer(NODROP).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in saved["model"].items()} == shapes
    assert saved["format"] == "full-by-name" and len(saved["rng"]) == 2
    resumed = launch(_fsdp_job, nproc=2, args=(folder, STEPS))
    assert [r["resumed_from"] for r in resumed] == [3, 3]
    expected, got = straight[0]["weights"], resumed[0]["weights"]
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)  # bit for bit
    assert not torch.equal(expected["blocks.0.q.weight"], TinyTransformer(NODROP).state_dict()["blocks.0.q.weight"])

    # The same checkpoint loads into one process (evaluation, merging): weights and Adam moments.
    model = TinyTransformer(NODROP)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    assert CheckpointManager(folder, track=False).restore(model, optimizer, scheduler)["step"] == STEPS
    assert all(torch.equal(v, got[k]) for k, v in model.state_dict().items())
    assert len(optimizer.state) == len(list(model.parameters()))
    assert scheduler.last_epoch == STEPS
