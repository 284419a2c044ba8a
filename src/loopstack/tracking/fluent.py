"""The fluent API an MLflow user already knows: module functions over an active-run stack.

The project comes from `set_project`, else the project opened last in this
process, else LOOPSTACK_PROJECT, else the working directory and its parents.

Each thread has its own run stack, so two pipelines (or trainings) run in
threads of one process each get their own runs instead of refusing to start
("already active") or nesting under each other. A thread with no run of its
own sees the main thread's innermost run, so a data-loader or callback thread
still logs to the run the main thread started (a thread started by another
worker thread does not see that worker's run: pass the run object to it).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConfigError, NotFoundError, ValidationError
from loopstack.tracking.entities import FAILED, FINISHED, validate_status
from loopstack.tracking.run import ActiveRun
from loopstack.tracking.store import DEFAULT_EXPERIMENT

if TYPE_CHECKING:
    from loopstack.core.project import Project
    from loopstack.registry.flavors import LoggedModel

_local = threading.local()  # .stack: this thread's runs, innermost last; gone with the thread
_stacks: list[tuple[threading.Thread, list[ActiveRun]]] = []  # every thread's non-empty stack, for _end
_lock = threading.RLock()


def _own() -> list[ActiveRun]:
    """This thread's run stack (empty when it has none)."""
    return getattr(_local, "stack", None) or []


def _push(run: ActiveRun) -> None:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    if not stack:
        _stacks.append((threading.current_thread(), stack))
    stack.append(run)


def _visible() -> ActiveRun | None:
    """For a thread without runs: the main thread's innermost run, or None."""
    main = threading.main_thread()
    return next((stack[-1] for thread, stack in _stacks if thread is main and stack), None)


def _end_orphans() -> None:
    """End, as FAILED, the runs of threads that exited without ending them."""
    for thread, stack in list(_stacks):
        if not thread.is_alive() and stack:
            _end(stack[0], FAILED)


_state: dict[str, Any] = {"project": None, "experiment": None, "seed": None, "hooks": False}


def set_project(project: Project | str | os.PathLike[str]) -> Project:
    """Use this project (or the project at this path) for the fluent API."""
    from loopstack.core.project import Project

    _state["project"] = project if isinstance(project, Project) else Project.open(project)
    return _state["project"]


def get_project() -> Project:
    """The fluent API's project: the one set, else the last one opened, else found from
    LOOPSTACK_PROJECT or the working directory."""
    from loopstack.core.project import Project, _open_projects

    project = _state["project"]
    if project is not None and _open_projects.get(project.root) is project:
        return project
    project = list(_open_projects.values())[-1] if _open_projects else Project.open()
    _state["project"] = project
    return project


def set_experiment(name: str) -> int:
    """Make `name` the experiment of the next runs, creating it if needed; returns its id."""
    experiment_id = get_project().tracking.get_or_create_experiment(name)
    _state["experiment"] = name
    return experiment_id


def start_run(
    run_id: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    project: Project | None = None,
) -> ActiveRun:
    """Start a run (or resume `run_id`) and make it active; use it as a context manager.

    With a run already active, pass ``nested=True`` to start a child run.
    """
    if project is not None:
        set_project(project)
    project = get_project()
    store = project.tracking
    with _lock:
        _end_orphans()
        own = _own()
        parent = own[-1] if own else (_visible() if nested else None)
        if own and not nested and run_id is None:
            raise ValidationError(
                f"run {parent.id} is already active; end it with end_run(), or pass nested=True to start a child run"
            )
        if run_id is not None:
            info = store.resume_run(run_id)
        else:
            name = experiment or _state["experiment"] or os.environ.get("LOOPSTACK_EXPERIMENT") or DEFAULT_EXPERIMENT
            experiment_id = store.get_or_create_experiment(name)
            info = store.create_run(experiment_id, run_name, parent.id if parent is not None else None)
        run = ActiveRun(store, info, seed=_state["seed"])
        if run_id is not None:
            run._params.update(store.params_of(run_id))
        _push(run)
        _install_hooks()
    if params:
        run.log_params(params)
    if tags:
        run.set_tags(tags)
    return run


def active_run() -> ActiveRun | None:
    """This thread's innermost active run; for a thread without one, the main thread's; or None."""
    own = getattr(_local, "stack", None)
    return own[-1] if own else _visible()


def end_run(status: str = FINISHED) -> None:
    """End the innermost active run with `status` (FINISHED, FAILED or KILLED)."""
    validate_status(status)
    run = active_run()
    if run is not None:
        _end(run, status)


def _end(run: ActiveRun, status: str, _outer: bool = True) -> None:
    with _lock:
        for entry in list(_stacks):  # any thread may end a run: `with` blocks, atexit
            stack = entry[1]
            if run in stack:
                # children still open end with their parent
                while stack and stack[-1] is not run:
                    stack.pop()._finish(status)
                stack.pop()
                if not stack:
                    _stacks.remove(entry)
        # so do its children that other threads started (start_run(nested=True) in a helper thread)
        children = [child for _, stack in _stacks for child in stack if child.info.parent_id == run.id]
    for child in children:
        _end(child, status, _outer=False)
    run._finish(status)
    if _outer:
        _raise_conflicts(run, status)


def _raise_conflicts(run: ActiveRun, status: str) -> None:
    """After a run (and those nested in it) ended: ConflictError for a param of an ended run that another
    process had stored first with another value. Not when the run failed, whose error it would hide: the
    conflict is logged and recorded as a ``run.value_dropped`` event either way."""
    from loopstack.tracking.writer import raise_conflicts

    if os.getpid() != run._owner_pid:  # a forked child: its flush() raises its own
        return
    live = run.store._live_runs
    conflicts = run._writer.take_conflicts(lambda run_id: run_id not in live)
    if status == FINISHED:
        raise_conflicts(conflicts)


def _current() -> ActiveRun:
    run = active_run()
    if run is None:
        raise NotFoundError("no active run; start one with loopstack.start_run()")
    return run


def log_metric(key: str, value: float, step: int | None = None, timestamp: float | None = None) -> None:
    """Log one metric point to the active run (buffered; returns in microseconds)."""
    try:  # the hot path: this thread's innermost run, without a call
        run = _local.stack[-1]
    except (AttributeError, IndexError):
        run = _current()
    run.log_metric(key, value, step, timestamp)


def log_metrics(metrics: dict[str, float], step: int | None = None, timestamp: float | None = None) -> None:
    _current().log_metrics(metrics, step, timestamp)


def log_param(key: str, value: Any) -> None:
    _current().log_param(key, value)


def log_params(params: dict[str, Any]) -> None:
    _current().log_params(params)


def set_tag(key: str, value: Any) -> None:
    _current().set_tag(key, value)


def set_tags(tags: dict[str, Any]) -> None:
    _current().set_tags(tags)


def log_artifact(local_path: str | os.PathLike[str], artifact_path: str | None = None) -> str:
    return _current().log_artifact(local_path, artifact_path)


def log_artifacts(local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> dict[str, str]:
    return _current().log_artifacts(local_dir, artifact_path)


def log_dict(data: dict[str, Any], artifact_file: str) -> str:
    return _current().log_dict(data, artifact_file)


def log_input(data: Any, name: str | None = None, context: str = "training", targets: Any = None) -> str:
    """Version a data set the active run reads; returns its content hash."""
    return _current().log_input(data, name, context, targets)


def log_model(model: Any, name: str = "model", example: Any = None, flavor: str | None = None,
              features: Any = None) -> LoggedModel:
    """Save a model with its signature (inferred from `example`) under the active run.

    `features`: what the model reads from the feature store (see `ActiveRun.log_model`).
    """
    return _current().log_model(model, name, example=example, flavor=flavor, features=features)


def read_dataset(path: str | os.PathLike[str], name: str | None = None, context: str = "training") -> Any:
    """Read a Parquet/CSV file as Arrow and, inside a run, record its data version."""
    from loopstack.tracking.datasets import read_table

    table = read_table(path)
    run = active_run()
    if run is not None:
        run.log_input(table, name or os.fspath(path), context)
    return table


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed random, NumPy and torch (when imported); recorded on the active and next runs.

    `deterministic` also switches torch to deterministic algorithms.
    """
    import random

    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed {seed!r} must be an integer in [0, 2**32)")
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    _seed_torch(seed, deterministic)
    _state["seed"] = seed
    run = active_run()
    if run is not None:
        run.set_tag("loopstack.seed", str(seed))
    return seed


def _seed_torch(seed: int, deterministic: bool) -> None:
    """Seed torch only when the program already imported it: importing torch to seed it would
    cost seconds in every program that never uses it. Import torch before seeding."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def _install_hooks() -> None:
    if _state["hooks"]:
        return
    _state["hooks"] = True
    previous = sys.excepthook

    def _fail_runs(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        _end_all(FAILED)
        previous(exc_type, exc, tb)

    sys.excepthook = _fail_runs
    atexit.register(_end_all, FINISHED)


def _end_all(status: str) -> None:
    """End the open runs and write what is buffered (at exit, or on an uncaught exception). A metadata database
    that cannot be reached is one logged line per project saying where what it did not take is kept
    (`TrackingStore.close`; no caller to raise to, and no traceback)."""
    from loopstack.core.errors import BackendUnavailableError

    stores: dict[int, Any] = {}  # the tracking stores to close, by identity
    while _stacks:
        run = _stacks[0][1][0]
        try:
            _end(run, status, _outer=False)  # ends the runs nested in it too; at exit no caller to raise to
        except BackendUnavailableError:
            stores[id(run.store)] = run.store  # its rows and end are kept: closing the store tries once more
    from loopstack.core.project import _open_projects

    for project in list(_open_projects.values()):
        if "tracking" in project.__dict__:
            stores[id(project.tracking)] = project.tracking
    for store in stores.values():
        try:
            store.close()
        except BackendUnavailableError as exc:  # it says where the unwritten rows are kept (the spool)
            _logger().error("loopstack could not write tracking data at exit: %s", exc)


def _logger() -> Any:
    import logging

    return logging.getLogger("loopstack.tracking")
