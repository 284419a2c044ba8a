"""Run a training function over Ray Train: the same function `launch` runs, on a Ray cluster.

``launch(fn, nproc=N, launcher="ray")`` hands `fn` to Ray Train's
``TorchTrainer`` with N workers. Ray places the workers (on one machine or
many), sets up the torch.distributed process group (gloo on CPU, NCCL with
GPUs) and runs `fn` in each; `fn` sees the same `rank()`, `world_size()` and
`wrap()` as under the local launcher, so a job written for one runs on the
other unchanged, and on the same data gives the same weights (tested with 2
CPU workers against a local Ray). Each worker sends its return value to a
small collector actor, which works across nodes where a shared temporary
folder would not. Without a running cluster a local one is started for the
call and shut down after it. Needs the ``ray`` extra.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import cloudpickle
import torch


class _Collector:
    """Per-rank results, gathered in one actor (a Ray actor class is made from it on first use)."""

    def __init__(self) -> None:
        self.results: dict[int, bytes] = {}

    def put(self, rank: int, value: bytes) -> None:
        self.results[rank] = value

    def get(self) -> dict[int, bytes]:
        return self.results


def _train_loop(config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: unpickle `fn`, call it, send the result to the collector."""
    import ray
    import torch.distributed as dist

    sys.path[:0] = [r for r in config["roots"] if r not in sys.path]
    fn, args, kwargs = cloudpickle.loads(config["payload"])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    value = fn(*args, **kwargs)
    rank = dist.get_rank() if dist.is_initialized() else 0
    ray.get(config["collector"].put.remote(rank, cloudpickle.dumps(value)))


def launch_ray(
    fn: Callable[..., Any],
    nproc: int,
    *,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    backend: str | None = None,
    roots: list[str] | None = None,
    use_gpu: bool | None = None,
) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` on `nproc` Ray Train workers; returns each rank's result in rank order.

    Prefer ``launch(fn, nproc, launcher="ray")``, which calls this. `roots`
    are folders put on the workers' ``sys.path`` so `fn`'s module imports
    there; `use_gpu` defaults to whether this machine has a GPU.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=max(nproc, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        collector = ray.remote(num_cpus=0)(_Collector).remote()
        config = {"payload": cloudpickle.dumps((fn, args, kwargs or {})), "collector": collector, "roots": roots or []}
        with tempfile.TemporaryDirectory(prefix="loopstack-ray-") as storage:
            trainer = TorchTrainer(
                _train_loop,
                train_loop_config=config,
                scaling_config=ScalingConfig(num_workers=nproc, use_gpu=gpu),
                torch_config=TorchConfig(backend=backend or ("nccl" if gpu else "gloo")),
                run_config=RunConfig(storage_path=storage, name="loopstack-launch"),
            )
            with warnings.catch_warnings():  # Ray Data's own deprecation notices, raised inside fit; not ours to act on
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
                trainer.fit()
        results = ray.get(collector.get.remote())
        return [cloudpickle.loads(results[r]) for r in range(nproc)]
    finally:
        if started:
            ray.shutdown()


__all__ = ["launch_ray"]
