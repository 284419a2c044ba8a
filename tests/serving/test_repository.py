"""The model repository: swaps of one name, however they overlap, leave one version served and retire the rest."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tests.serving.conftest import SlowModel

from loopstack.serving.batcher import DrainingError
from loopstack.serving.config import ModelSpec
from loopstack.serving.repository import ModelRepository


def test_overlapping_swaps_of_one_model_retire_every_version_but_the_last() -> None:
    """Both swaps took version 1 as the one to retire: the version the first swapped in was replaced, never
    drained, and kept taking requests on a loop that shutdown did not stop."""

    async def main() -> None:
        repo = ModelRepository([ModelSpec(name="m", model=SlowModel(0.0))], ThreadPoolExecutor(2))
        await repo.start()
        first = repo.get("m")
        swapped = await asyncio.gather(
            repo.swap("m", model=SlowModel(0.0, version=2)), repo.swap("m", model=SlowModel(0.0, version=3))
        )
        current = repo.get("m")
        assert current is swapped[1]
        for replaced in (first, swapped[0]):
            with pytest.raises(DrainingError):
                await replaced.submit(np.ones((1, 3)), "late")
        assert (await current.submit(np.ones((1, 3)), "now")).tolist() == [3.0]
        assert await repo.drain()
        assert repo.batchers() == [current]

    asyncio.run(main())
