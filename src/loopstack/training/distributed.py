"""Data-parallel training over torch.distributed: launch processes, join the group, wrap the model.

`launch(fn, nproc=N)` starts N processes (``torch.multiprocessing`` spawn),
each joining one process group on a free local port, calls ``fn(*args)`` in
each and returns the per-rank results. Like torchrun, each process gets one
intra-op thread unless OMP_NUM_THREADS says otherwise, so N processes do not
oversubscribe the cores. ``loopstack train --nproc N script.py``
does the same for a script, setting the variables torchrun sets (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); the script calls
`init_distributed()`. The backend is gloo on CPU and NCCL when each process
has a GPU.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cloudpickle
import torch
import torch.distributed as dist

from loopstack.core.errors import ConfigError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Processes in the group (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (just ``[obj]`` outside a group)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every rank gets here (nothing outside a process group)."""
    if world_size() > 1:
        dist.barrier()


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Join the process group described by RANK/WORLD_SIZE/MASTER_* (as torchrun sets them).

    Returns ``(rank, world_size)``; with no WORLD_SIZE or WORLD_SIZE=1 it joins
    nothing and returns ``(0, 1)``. With GPUs, it binds the process to
    LOCAL_RANK's device.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 or dist.is_initialized():
        return rank(), world_size()
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, rank=int(os.environ["RANK"]), world_size=size)
    return rank(), world_size()


def wrap(model: torch.nn.Module, strategy: Literal["ddp", "fsdp"] = "ddp") -> torch.nn.Module:
    """Wrap `model` for data parallelism: DDP, or FSDP2's ``fully_shard`` (ZeRO-3-style sharding).

    Outside a process group the model is returned unchanged.
    """
    if world_size() == 1:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if isinstance(module, torch.nn.ModuleList):
                for block in module:
                    fully_shard(block)
        return fully_shard(model)
    raise ConfigError(f"strategy={strategy!r} must be 'ddp' or 'fsdp'")


def _package_root(module: Any) -> str | None:
    """The sys.path entry a module was imported from (e.g. the repo root for ``tests.x.test_y``)."""
    path = getattr(module, "__file__", None)
    if not path or module.__name__ == "__main__":
        return None
    return str(Path(path).resolve().parents[module.__name__.count(".")])


def _worker(
    local_rank: int, nproc: int, port: int, payload: bytes, results: str, backend: str, roots: list[str]
) -> None:
    os.environ.update(
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    sys.path[:0] = [r for r in roots if r not in sys.path]
    fn, args, kwargs = cloudpickle.loads(payload)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    init_distributed(backend)
    try:
        value = fn(*args, **kwargs)
        Path(results, f"rank-{local_rank}.pkl").write_bytes(cloudpickle.dumps(value))
    finally:
        dist.destroy_process_group()


def launch(
    fn: Callable[..., Any],
    nproc: int = 2,
    *,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    backend: str | None = None,
    start_method: Literal["fork", "spawn"] | None = None,
    launcher: Literal["local", "ray"] = "local",
) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` in `nproc` processes of one process group; returns each rank's result.

    `start_method` defaults to ``"fork"`` on Linux while CUDA is not in use
    (the workers inherit the imported libraries and start in milliseconds)
    and to ``"spawn"`` otherwise (CUDA cannot survive a fork). With spawn,
    `fn` is sent by value when defined in ``__main__`` (a script or notebook),
    and the folder its package was imported from is put on the workers'
    ``sys.path``.

    ``launcher="ray"`` runs the same function on Ray Train workers instead
    (`loopstack.training.ray`, the ``ray`` extra); `backend` is then the
    process group's backend Ray sets up.
    """
    if nproc < 1:
        raise ConfigError(f"nproc={nproc} must be at least 1")
    if launcher not in ("local", "ray"):
        raise ConfigError(f"launcher={launcher!r} must be 'local' (torch.multiprocessing) or 'ray' (Ray Train)")
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    root = _package_root(module) if module is not None else None
    if launcher == "ray":
        from loopstack.training.ray import launch_ray

        return launch_ray(fn, nproc, args=args, kwargs=kwargs, backend=backend, roots=[root] if root else [])
    backend = backend or default_backend()
    if start_method is None:
        fork_ok = sys.platform == "linux" and backend == "gloo" and not torch.cuda.is_initialized()
        start_method = "fork" if fork_ok else "spawn"
    import torch.multiprocessing as mp

    payload = cloudpickle.dumps((fn, args, kwargs or {}))
    with tempfile.TemporaryDirectory(prefix="loopstack-launch-") as results:
        mp.start_processes(
            _worker, args=(nproc, free_port(), payload, results, backend, [root] if root else []),
            nprocs=nproc, start_method=start_method,
        )
        return [cloudpickle.loads(Path(results, f"rank-{r}.pkl").read_bytes()) for r in range(nproc)]
