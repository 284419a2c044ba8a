"""Ray Train: the same job on 2 Ray workers (gloo, CPU) gives the weights the torch.distributed launch gives."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ray.train")

from tests.training.conftest import TINY, tokens  # noqa: E402

from loopstack.core.errors import ConfigError  # noqa: E402
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

NODROP = TINY.with_(dropout=False)


def _job(steps: int) -> dict[str, object]:
    import torch.distributed as dist

    from loopstack.training import rank, world_size

    seed_everything(0)
    model = wrap(TinyTransformer(NODROP))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = ResumableLoader((tokens(64),), 4, seed=3, rank=rank(), world_size=world_size())
    losses = fit(model, optimizer, loader, lm_loss, TrainConfig(steps=steps)).losses
    flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
    return {"rank": rank(), "size": world_size(), "backend": dist.get_backend(), "losses": losses, "weights": flat}


@pytest.mark.slow
def test_ray_train_gives_the_weights_of_the_torch_distributed_launch() -> None:
    local = launch(_job, nproc=2, args=(3,))
    remote = launch(_job, nproc=2, args=(3,), launcher="ray")
    assert [(r["rank"], r["size"], r["backend"]) for r in remote] == [(0, 2, "gloo"), (1, 2, "gloo")]
    assert torch.equal(remote[0]["weights"], remote[1]["weights"])  # DDP kept the Ray workers in step
    for mine, theirs in zip(remote, local, strict=True):
        assert torch.equal(mine["weights"], theirs["weights"])  # same data, same collective: bit for bit
        assert mine["losses"] == theirs["losses"]
    assert remote[0]["losses"][-1] < remote[0]["losses"][0]


def test_unknown_launcher_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="launcher='slurm'"):
        launch(_job, nproc=2, args=(1,), launcher="slurm")  # type: ignore[arg-type]


RAY_SCRIPT = """
import json, os, sys
import torch
import torch.distributed as dist
from loopstack.training import init_distributed

rank, size = init_distributed()
total = torch.tensor([float(rank + 1)])
dist.all_reduce(total)
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:  # relative: the caller's folder
    json.dump({"rank": rank, "size": size, "sum": total.item(), "args": sys.argv[2:]}, f)
if "--fail" in sys.argv:
    sys.exit(4)
"""


@pytest.mark.slow
def test_train_command_runs_a_script_on_ray_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import ray
    from click.testing import CliRunner

    from loopstack.training.cli import train

    script = tmp_path / "job.py"
    script.write_text(RAY_SCRIPT)
    (tmp_path / "first").mkdir()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # one local cluster for both runs
    try:
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(train, ["--launcher", "ray", "--nproc", "2", "job.py", "first", "--lr", "1"])
        failed = CliRunner().invoke(train, ["--launcher", "ray", "--nproc", "2", str(script), str(script.parent),
                                            "--fail"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    ranks = [json.loads((tmp_path / "first" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["size"], r["sum"], r["args"]) for r in ranks] == [(0, 2, 3.0, ["--lr", "1"]),
                                                                            (1, 2, 3.0, ["--lr", "1"])]
    assert failed.exit_code == 1 and "exited with status 4" in failed.output, failed.output
