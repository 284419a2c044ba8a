"""Find pipelines and policies: ``file.py:name`` or ``module:name`` references, and definitions files.

Definitions files are imported as real modules (registered in
``sys.modules``) so that a step's source can be read for its code digest and
its module can be shipped by value to pool and Ray workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from loopstack.core.project import Project
    from loopstack.pipelines.dags import Pipeline
    from loopstack.pipelines.policy import Policy


def load_reference(reference: str, root: Path | None = None) -> Any:
    """The object named by ``path/to/file.py:attr`` (relative to `root`) or ``package.module:attr``.

    Examples
    --------
    >>> load_reference("loopstack.pipelines.cron:Cron").__name__
    'Cron'
    """
    module_ref, _, attribute = reference.rpartition(":")
    if not module_ref or not attribute:
        raise ConfigError(f"{reference!r} is not a reference; write file.py:name or package.module:name")
    module = load_module(module_ref, root)
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            names = sorted(n for n in vars(module) if not n.startswith("_"))
            raise NotFoundError(f"{module_ref} has no {attribute!r}; it defines {names[:30]}")
        value = getattr(value, part)
    return value


def load_module(reference: str, root: Path | None = None) -> ModuleType:
    """Import a file (``.py``, relative to `root`) or a dotted module, with `root` importable."""
    base = Path(root or Path.cwd()).resolve()
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))  # definitions may import their neighbours
    if reference.endswith(".py") or "/" in reference:
        return _import_file((base / reference).resolve())
    try:
        return importlib.import_module(reference)
    except ModuleNotFoundError as exc:
        raise NotFoundError(
            f"cannot import {reference!r} ({exc}); check the name, or give a file path like x.py"
        ) from None


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist; check the path in the reference or loopstack.yaml")
    import hashlib

    name = f"loopstack_definitions_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"{path.name} failed to import: {type(exc).__name__}: {exc}; fix the file") from exc
    return module


def discover(project: Project) -> tuple[dict[str, Pipeline], list[Policy]]:
    """The pipelines and policies of a project: its definitions files, then its ``loop:`` config."""
    from loopstack.pipelines.config import policies_from_config
    from loopstack.pipelines.dags import REGISTRY, Pipeline
    from loopstack.pipelines.policy import Policy

    pipelines: dict[str, Pipeline] = {}
    policies: dict[str, Policy] = {}
    origins: dict[str, str] = {}

    def add(policy: Policy, origin: str) -> None:
        if policies.get(policy.name, policy) is not policy:  # the later one silently replaced the first
            raise ConfigError(
                f"policy {policy.name!r} is declared twice: in {origins[policy.name]} and in {origin}; a policy's "
                "name is its identity (its state and events), so rename one"
            )
        policies[policy.name], origins[policy.name] = policy, origin

    for name in project.config.definitions:
        module = _import_file((project.root / name).resolve())
        for value in vars(module).values():
            if isinstance(value, Pipeline):
                pipelines[value.name] = value
            elif isinstance(value, Policy):
                add(value, name)
    for policy in policies_from_config(project.config.loop, project.root):
        add(policy, "loopstack.yaml loop.policies")
    for pipeline in REGISTRY.values():  # pipelines defined by code imported above, e.g. a helper module
        pipelines.setdefault(pipeline.name, pipeline)
    return pipelines, list(policies.values())


__all__ = ["discover", "load_module", "load_reference"]
