"""A project: a folder with `loopstack.yaml`, and the handle every component hangs from.

``Project.open(path)`` reads the config, opens the metadata database (creating
or migrating its schema), and gives lazy access to the artifact store, the
event log, tracking and the registry. Nothing heavy is touched until used.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from loopstack.core.defaults import CONFIG_FILE, default_config, dump_yaml
from loopstack.core.errors import BackendUnavailableError, ConfigError, ConflictError, LoopstackError, NotFoundError

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from loopstack.core.artifacts import ArtifactStore
    from loopstack.core.config import ProjectConfig
    from loopstack.core.db import MetadataDB
    from loopstack.core.events import EventLog
    from loopstack.features.store import FeatureStore
    from loopstack.registry.store import Registry
    from loopstack.rollout.deployments import Deployments
    from loopstack.tracking.store import TrackingStore

PROJECT_ENV = "LOOPSTACK_PROJECT"
_open_projects: dict[Path, Project] = {}
_open_lock = threading.Lock()


class Project:
    """An opened loopstack project.

    Examples
    --------
    >>> import tempfile
    >>> project = Project.init(tempfile.mkdtemp(), name="fraud")
    >>> project.config.name
    'fraud'
    >>> project.close()
    """

    def __init__(self, root: Path, config: ProjectConfig | dict[str, Any]) -> None:
        self.root = root
        if isinstance(config, dict):
            self._written = config  # what Project.init wrote from the defaults; `config` validates it on first use
        else:
            self.__dict__["config"] = config

    @cached_property
    def config(self) -> ProjectConfig:
        """The validated configuration."""
        from loopstack.core.config import ProjectConfig

        return ProjectConfig.model_validate(self._written)

    def _setting(self, key: str) -> Any:
        """One top-level config value, read without building `config` where it is not built yet."""
        if "config" in self.__dict__:
            return getattr(self.config, key)
        value = self._written[key]
        return SimpleNamespace(**value) if isinstance(value, dict) else value

    # -- creating and opening -------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", name: str | None = None, **settings: Any) -> Project:
        """Create a project folder with a `loopstack.yaml` and open it.

        Extra keyword arguments become top-level config keys (validated), e.g.
        ``metadata="postgresql://127.0.0.1/test"``.
        """
        root = Path(path).resolve()
        config_path = root / CONFIG_FILE
        if config_path.exists():
            raise _already_exists(root)
        data = {"name": name or _default_name(root), **settings}
        config: ProjectConfig | dict[str, Any] | None = default_config(data)  # a valid name and nothing else
        if config is not None:
            text = dump_yaml(config)
        else:
            from loopstack.core.config import dump_config, parse_config

            text = dump_config(parse_config(data, source="Project.init", environment=False))
            config = parse_config(data, source="Project.init")  # the LOOPSTACK_* overrides, in memory only
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / ".loopstack").mkdir(exist_ok=True)
            (root / ".loopstack" / ".gitignore").write_text("*\n")
            created = _create_exclusively(config_path, text)
        except OSError as error:
            raise ConfigError(
                f"cannot create the project in {root}: {error.strerror}; choose a folder you can write to"
            ) from error
        if not created:  # another process's init got there between the check above and now
            raise _already_exists(root)
        try:
            return cls._open(root, lambda: config)  # just validated: no need to read the file back
        except LoopstackError:
            config_path.unlink()  # ours, a moment old: with it gone, init can be rerun with a corrected setting
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Project:
        """Open the project at `path`, or found from LOOPSTACK_PROJECT or the working directory.

        Opening the same folder twice in one process returns the same object.
        """
        from loopstack.core.config import load_config

        root = find_root(path)
        return cls._open(root, lambda: load_config(root))

    @classmethod
    def _open(cls, root: Path, config: Callable[[], ProjectConfig | dict[str, Any]]) -> Project:
        with _open_lock:
            existing = _open_projects.get(root)
            if existing is not None:
                return existing
            project = cls(root, config())
            project._ensure_schema()
            _open_projects[root] = project
        project._after_open()
        return project

    def close(self) -> None:
        """Flush pending writes and release connections."""
        with _open_lock:
            _open_projects.pop(self.root, None)
        try:
            try:
                if "feature_store" in self.__dict__:
                    self.feature_store.close()
            finally:
                if "tracking" in self.__dict__:
                    self.tracking.close()  # with the database away: spools, then raises saying where
        finally:
            if "db" in self.__dict__:
                self.db.dispose()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Project(name={self._setting('name')!r}, root={str(self.root)!r})"

    # -- components ------------------------------------------------------------
    @cached_property
    def db(self) -> MetadataDB:
        from loopstack.core.db import MetadataDB, normalize_url
        from loopstack.core.defaults import environment_override
        from loopstack.schema_sqlite import HEAD, SCRIPT

        url = normalize_url(self._setting("metadata"), self.root)
        variable = environment_override("metadata")
        source = f"the environment variable {variable}" if variable else "`metadata:` in loopstack.yaml"
        return MetadataDB(url, _all_tables, HEAD, sqlite_script=SCRIPT, source=source)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        from loopstack.core.artifacts import ArtifactStore

        location = self._setting("artifacts")
        local = location.removeprefix("file://")
        if "://" not in local:  # a folder: `~` is the home, and a relative path starts at the project, not the cwd
            local = os.path.expanduser(local)
            location = local if os.path.isabs(local) else str(self.root / local)
        return ArtifactStore(location)

    @cached_property
    def events(self) -> EventLog:
        from loopstack.core.events import EventLog

        return EventLog(self.db)

    @cached_property
    def tracking(self) -> TrackingStore:
        from loopstack.tracking.store import TrackingStore

        return TrackingStore(self)

    @cached_property
    def registry(self) -> Registry:
        from loopstack.registry.store import Registry

        return Registry(self)

    @cached_property
    def feature_store(self) -> FeatureStore:
        from loopstack.features.store import FeatureStore

        return FeatureStore(self)

    @cached_property
    def deployments(self) -> Deployments:
        from loopstack.rollout.deployments import Deployments

        return Deployments(self)

    def _ensure_schema(self) -> None:
        """Create or migrate the schema; a database that cannot be used is a LoopstackError naming it."""
        try:
            self.db.ensure_schema()
        except LoopstackError:
            raise
        except Exception as exc:
            cause = getattr(exc, "orig", None)
            if type(exc).__module__ != "sqlalchemy.exc" or cause is None:
                raise
            from loopstack.core.db import _redact

            self.db.dispose()
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise BackendUnavailableError(
                f"cannot open the metadata database {_redact(self.db.url)}: {reason}; "
                "if another process holds it locked, retry when it is done; if the file is not a loopstack "
                "database, point `metadata:` in loopstack.yaml at another file"
            ) from exc

    def _after_open(self) -> None:
        self.tracking.replay_spool()  # first: a spooled run end is the run's real end, not a kill
        self.tracking.reap_dead_runs()


def _all_tables() -> MetaData:
    """Every table (importing them is importing SQLAlchemy: done when first needed)."""
    from loopstack.schema import METADATA

    return METADATA


def find_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding `loopstack.yaml`: `path`, LOOPSTACK_PROJECT, or cwd and its parents."""
    if path is not None:
        root = Path(path).resolve()
        if not (root / CONFIG_FILE).is_file():
            raise NotFoundError(f"no {CONFIG_FILE} in {root}; create one with `loopstack init {root}`")
        return root
    from_env = os.environ.get(PROJECT_ENV)
    if from_env:
        return find_root(from_env)
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise NotFoundError(
        f"no {CONFIG_FILE} in {here} or its parents; run `loopstack init`, "
        f"set {PROJECT_ENV}, or call loopstack.Project.open(path)"
    )


def _already_exists(root: Path) -> ConflictError:
    return ConflictError(
        f"{root / CONFIG_FILE} already exists; open it with Project.open({str(root)!r}) or choose an empty folder"
    )


def _create_exclusively(path: Path, text: str) -> bool:
    """Write a new file whole, or return False where one exists: two `init`s of one folder
    at once get one winner, and no reader ever sees a config half written.

    The text goes to a temporary file that is hard-linked into place (atomic, and
    refused where the name exists); where links are not supported, the file is
    created exclusively and written.
    """
    import uuid

    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_text(text, encoding="utf-8")
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links
        try:
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(text)
            return True
        except FileExistsError:
            return False
    finally:
        temporary.unlink(missing_ok=True)


def _default_name(root: Path) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]", "-", root.name).strip("-.") or "project"
    if not name[0].isalpha():
        name = f"p-{name}"
    if len(name) > 128:
        raise ConfigError(f"cannot derive a project name from {root}; pass name=")
    return name
