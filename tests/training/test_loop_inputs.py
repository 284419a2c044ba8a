"""`fit` and `ResumableLoader` with the inputs users actually pass: finite loaders, odd clip values, uneven data."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from loopstack.core.errors import ConfigError  # noqa: E402
from loopstack.training import ResumableLoader, TrainConfig, fit, seed_everything  # noqa: E402


def _mse(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return torch.nn.functional.mse_loss(model(batch[0]).squeeze(-1), batch[1])


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    return x, x @ torch.tensor([1.0, -2.0, 0.5])


def test_a_finite_loader_is_read_again_for_more_steps_than_it_has_batches() -> None:
    x, y = _data()
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]  # 4 batches, 10 steps: was a bare StopIteration
    seed_everything(0)
    model = torch.nn.Linear(3, 1)
    result = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, _mse, TrainConfig(steps=10))
    assert result.step == 10 and len(result.losses) == 10
    # The same 10 steps over a loader that never ends give the same weights: each pass reads the list again.
    seed_everything(0)
    again = torch.nn.Linear(3, 1)
    fit(again, torch.optim.SGD(again.parameters(), lr=0.1), ResumableLoader((x, y), 4, shuffle=False), _mse,
        TrainConfig(steps=10))
    assert torch.equal(model.weight, again.weight)


def test_a_one_shot_or_empty_loader_is_refused_by_name() -> None:
    x, y = _data()
    model = torch.nn.Linear(3, 1)
    one_shot = ((x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4))
    with pytest.raises(ConfigError, match="ran out after 4 batches"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), one_shot, _mse, TrainConfig(steps=5))
    with pytest.raises(ConfigError, match="ran out after 0 batches"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), [], _mse, TrainConfig(steps=1))


@pytest.mark.parametrize("norm", [0.0, -1.0, math.nan])
def test_a_clip_norm_that_would_zero_or_reverse_the_update_is_refused(norm: float) -> None:
    # clip_grad_norm_ multiplies by max_norm / norm: -1 used to turn every step into gradient ascent.
    with pytest.raises(ConfigError, match="max_grad_norm="):
        TrainConfig(steps=1, max_grad_norm=norm)


def test_tensors_of_different_lengths_are_refused_up_front() -> None:
    x, y = _data()
    with pytest.raises(ConfigError, match=r"\[16, 12\] rows"):  # used to fail mid-epoch on an index, or cut x
        ResumableLoader((x, y[:12]), 4)


def _advanced(steps: int, batch_size: int, rank: int = 0, world_size: int = 1) -> ResumableLoader:
    loader = ResumableLoader((torch.arange(24),), batch_size, seed=3, rank=rank, world_size=world_size)
    for _ in range(steps):
        loader.next_batch()
    return loader


def test_resuming_with_another_samples_per_step_is_refused_with_both_values_and_the_fix() -> None:
    state = _advanced(3, batch_size=4).state_dict()  # the position counts steps of 4 samples
    bigger = ResumableLoader((torch.arange(24),), 8, seed=3)
    both = r"world_size=1, batch_size=4 \(4 samples a step\).*world_size=1, batch_size=8 \(8 a step\)"
    with pytest.raises(ConfigError, match=both):
        bigger.load_state_dict(state)  # used to jump to sample 24 of 24: a silent new epoch
    assert bigger.position == 0
    two_ranks = ResumableLoader((torch.arange(24),), 4, seed=3, rank=0, world_size=2)
    with pytest.raises(ConfigError, match="resume with batch_size=2 on these 2 ranks"):
        two_ranks.load_state_dict(state)


def test_resuming_over_other_data_or_another_shuffle_is_refused() -> None:
    """The position indexes a permutation of the data set: other data or shuffling reads other samples."""
    original = _advanced(3, batch_size=4)
    state = original.state_dict()
    grown = ResumableLoader((torch.arange(28),), 4, seed=3)  # new rows landed before the restart
    with pytest.raises(ConfigError, match="saved over 24 samples but this loader has 28"):
        grown.load_state_dict(state)
    ordered = ResumableLoader((torch.arange(24),), 4, seed=3, shuffle=False)
    with pytest.raises(ConfigError, match="saved with shuffle=True but this loader has shuffle=False"):
        ordered.load_state_dict(state)
    same = ResumableLoader((torch.arange(24),), 4, seed=3)
    same.load_state_dict(state)
    assert same.next_batch()[0].tolist() == original.next_batch()[0].tolist()
    legacy = {k: v for k, v in state.items() if k not in ("size", "shuffle")}  # saved before they were recorded
    grown.load_state_dict(legacy)
    assert grown.position == 3


def test_the_same_samples_per_step_split_another_way_resumes_exactly() -> None:
    ranks = [_advanced(7, batch_size=2, rank=r, world_size=2) for r in range(2)]  # 6 steps an epoch: crosses one
    single = ResumableLoader((torch.arange(24),), 4, seed=3)
    single.load_state_dict(ranks[0].state_dict())
    for _ in range(6):
        together = torch.cat([loader.next_batch()[0] for loader in ranks])
        assert sorted(single.next_batch()[0].tolist()) == sorted(together.tolist())
