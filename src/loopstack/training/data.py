"""A data loader that knows where it is, so a resumed run reads the batches it would have read.

The order of epoch e is a permutation drawn from a generator seeded with
``seed + e`` (independent of the global RNG), and the loader's state is just
``(epoch, position)``. Under data parallelism each rank takes every
``world_size``-th index of the same permutation, so the ranks' batches put
together are exactly the batch a single process would read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from loopstack.core.errors import ConfigError


class ResumableLoader:
    """Batches from tensors or a map-style dataset, forever, with a saveable position.

    Parameters
    ----------
    data
        A tuple of tensors sharing their first dimension, or a dataset with
        ``__len__`` and ``__getitem__``.
    batch_size
        Samples per batch on this rank.
    shuffle, seed
        Shuffle each epoch with a permutation seeded by ``seed + epoch``.
    rank, world_size
        Data-parallel shard to read; defaults to a single process.

    Examples
    --------
    >>> import torch
    >>> loader = ResumableLoader((torch.arange(6),), batch_size=2, shuffle=False)
    >>> [loader.next_batch()[0].tolist() for _ in range(2)]
    [[0, 1], [2, 3]]
    >>> state = loader.state_dict()
    >>> fresh = ResumableLoader((torch.arange(6),), batch_size=2, shuffle=False)
    >>> fresh.load_state_dict(state)
    >>> fresh.next_batch()[0].tolist()
    [4, 5]
    """

    def __init__(
        self,
        data: Sequence[torch.Tensor] | Any,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.data = data
        self.tensors = isinstance(data, tuple | list) and all(isinstance(t, torch.Tensor) for t in data)
        if self.tensors:
            sizes = [len(t) for t in data]
            if len(set(sizes)) != 1:  # a shorter tensor fails mid-run on an index, a longer one is silently cut
                raise ConfigError(f"the data tensors have {sizes} rows; pass tensors of one length (or one tensor)")
        self.size = len(data[0]) if self.tensors else len(data)
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"batch_size={batch_size} must be positive and rank={rank} in [0, {world_size})")
        self.batches_per_epoch = self.size // world_size // batch_size
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"{self.size} samples cannot fill one batch of {batch_size} on each of {world_size} ranks; "
                "lower batch_size"
            )
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self._order: torch.Tensor | None = None

    def _indices(self) -> torch.Tensor:
        if self._order is None:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed + self.epoch)
                order = torch.randperm(self.size, generator=generator)
            else:
                order = torch.arange(self.size)
            usable = self.batches_per_epoch * self.batch_size * self.world_size
            self._order = order[:usable][self.rank :: self.world_size]
        return self._order

    def next_batch(self) -> Any:
        """The next batch, rolling over to a new epoch (and a new order) at the end of one."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        start = self.position * self.batch_size
        index = self._indices()[start : start + self.batch_size]
        self.position += 1
        if self.tensors:
            return tuple(t[index] for t in self.data)
        return default_collate([self.data[int(i)] for i in index])

    def __iter__(self) -> Iterator[Any]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "world_size": self.world_size, "batch_size": self.batch_size, "size": self.size,
                "shuffle": int(self.shuffle)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at a saved position; refused if a step now reads a different number of samples.

        The position counts steps, and step k reads samples ``[k * G, (k + 1) * G)`` of the epoch's permutation,
        G being ``world_size * batch_size``. With the same G the position means the same samples whatever the
        split across ranks (4 ranks x 2 resume 2 x 4 exactly); with another G it does not, and the epoch's
        dropped tail moves too, so no position converts exactly. States saved before G was recorded load as is.
        """
        self._check_same_step_size(state)
        self._check_same_order(state)
        self.epoch, self.position, self._order = int(state["epoch"]), int(state["position"]), None
        self.seed = int(state.get("seed", self.seed))

    def _check_same_order(self, state: dict[str, int]) -> None:
        """Another data set size or shuffle setting permutes other samples: the position would point elsewhere."""
        if "size" in state and int(state["size"]) != self.size:
            raise ConfigError(
                f"the loader state was saved over {int(state['size'])} samples but this loader has {self.size}, so "
                "its position would point at other samples; resume on the same data, or start a fresh run"
            )
        if "shuffle" in state and bool(state["shuffle"]) != self.shuffle:
            raise ConfigError(
                f"the loader state was saved with shuffle={bool(state['shuffle'])} but this loader has "
                f"shuffle={self.shuffle}; resume with shuffle={bool(state['shuffle'])}, or start a fresh run"
            )

    def _check_same_step_size(self, state: dict[str, int]) -> None:
        if "world_size" not in state or "batch_size" not in state:
            return
        saved_ws, saved_bs = int(state["world_size"]), int(state["batch_size"])
        saved, now = saved_ws * saved_bs, self.world_size * self.batch_size
        if saved == now:
            return
        splits = saved % self.world_size == 0
        fix = f"batch_size={saved // self.world_size} on these {self.world_size} ranks or " if splits else ""
        raise ConfigError(
            f"the loader state was saved with world_size={saved_ws}, batch_size={saved_bs} ({saved} samples a step) "
            f"but this loader has world_size={self.world_size}, batch_size={self.batch_size} ({now} a step), so its "
            f"position would point at other samples; resume with {fix}world_size={saved_ws}, batch_size={saved_bs}, "
            "or start a fresh run"
        )
