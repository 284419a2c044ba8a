"""The read side of tracking: runs, metric histories, search and comparison."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopstack.tracking.entities import Experiment, Metric, Run

if TYPE_CHECKING:
    from loopstack.core.project import Project


class RunPage(list[Run]):
    """A page of runs; `token` fetches the next page (None on the last)."""

    token: str | None = None


@dataclass(frozen=True)
class RunComparison:
    """Params and metrics of several runs side by side, with the keys that differ."""

    run_ids: list[str]
    params: dict[str, list[str | None]]
    metrics: dict[str, list[float | None]]

    @property
    def differing_params(self) -> list[str]:
        return [key for key, values in self.params.items() if len(set(values)) > 1]

    @property
    def differing_metrics(self) -> list[str]:
        return [key for key, values in self.metrics.items() if not _all_equal(values)]

    def rows(self) -> list[tuple[str, str, list[Any], bool]]:
        """(kind, key, values per run, differs) for display."""
        differs_p, differs_m = set(self.differing_params), set(self.differing_metrics)
        return [("param", k, v, k in differs_p) for k, v in self.params.items()] + [
            ("metric", k, v, k in differs_m) for k, v in self.metrics.items()
        ]

    def to_pandas(self) -> Any:
        import pandas as pd

        records = {f"{kind}s.{key}": values for kind, key, values, _ in self.rows()}
        return pd.DataFrame(records, index=self.run_ids).T


class Client:
    """Read runs of a project (the working directory's by default).

    Examples
    --------
    >>> import loopstack as ls, tempfile
    >>> project = ls.Project.init(tempfile.mkdtemp(), name="client-demo")
    >>> for lr in (0.1, 0.01):
    ...     with ls.start_run(project=project, params={"lr": lr}) as run:
    ...         run.log_metric("acc", 0.9 if lr == 0.1 else 0.8)
    >>> best = ls.Client(project).search_runs("metrics.acc > 0.85")
    >>> [r.params["lr"] for r in best]
    ['0.1']
    >>> project.close()
    """

    def __init__(self, project: Project | str | os.PathLike[str] | None = None) -> None:
        from loopstack.core.project import Project

        if isinstance(project, Project):
            self.project = project
        elif project is None:
            from loopstack.tracking.fluent import get_project

            self.project = get_project()
        else:
            self.project = Project.open(project)
        self.store = self.project.tracking

    def list_experiments(self) -> list[Experiment]:
        return self.store.list_experiments()

    def get_experiment_by_name(self, name: str) -> Experiment:
        return self.store.experiment_by_name(name)

    def get_run(self, run_id: str) -> Run:
        return self.store.get_run(run_id)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point of one metric, ordered by step then time."""
        self.store.get_run_info(run_id)
        return self.store.metric_history(run_id, key)

    def search_runs(
        self,
        filter_string: str | None = None,
        experiment_names: list[str] | str | None = None,
        order_by: list[str] | str | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> RunPage:
        """Runs matching a filter such as ``metrics.acc > 0.9 and params.lr = '0.01'``.

        `order_by` takes clauses like ``"metrics.acc desc"``; runs lacking the
        value sort last. Pass the returned page's `token` to get the next page.
        """
        ids = None
        if experiment_names is not None:
            names = [experiment_names] if isinstance(experiment_names, str) else experiment_names
            ids = [self.store.experiment_by_name(name).id for name in names]
        runs, token = self.store.search(ids, filter_string, order_by, max_results, page_token)
        page = RunPage(runs)
        page.token = token
        return page

    def compare_runs(self, run_ids: list[str]) -> RunComparison:
        """Params and latest metrics of the runs, aligned by key."""
        runs = [self.get_run(run_id) for run_id in run_ids]
        param_keys = sorted({k for run in runs for k in run.params})
        metric_keys = sorted({k for run in runs for k in run.metrics if not k.startswith("system.")})
        return RunComparison(
            run_ids=list(run_ids),
            params={k: [run.params.get(k) for run in runs] for k in param_keys},
            metrics={k: [run.metrics.get(k) for run in runs] for k in metric_keys},
        )

    def list_artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return self.store.list_artifacts(run_id)

    def download_artifact(self, run_id: str, path: str, destination: str | os.PathLike[str]) -> Path:
        """Copy an artifact out of the store (hash verified) into `destination`."""
        digest = self.store.artifact_digest(run_id, path)
        target = Path(destination)
        if target.is_dir():
            target = target / Path(path).name
        return self.project.artifacts.get_file(digest, target)

    def read_artifact(self, run_id: str, path: str) -> bytes:
        return self.project.artifacts.get_bytes(self.store.artifact_digest(run_id, path))


def _all_equal(values: list[float | None]) -> bool:
    first = values[0] if values else None
    for value in values[1:]:
        if first is None or value is None:
            if first is not value:
                return False
        elif not (value == first or (math.isnan(value) and math.isnan(first))):
            return False
    return True
