"""`FeatureStore`: the project's feature store, with Feast's verbs.

It wires the parts together and holds no logic of its own: definitions
(`catalog`), the DuckDB offline engine, the online store chosen by URL, the
feature log. Definitions come from ``apply(objects)`` in this process or
from the project's definition files; files that differ from what was last
applied are refused, so a model is never served by definitions nobody
reviewed in a plan.

Examples
--------
>>> import tempfile
>>> from datetime import datetime, timedelta
>>> import pyarrow as pa
>>> import loopstack as ls
>>> from loopstack.features import Entity, FeatureView, Field, Float64, TableSource
>>> project = ls.Project.init(tempfile.mkdtemp(), name="demo")
>>> rows = pa.table({"driver_id": [1, 1], "conv_rate": [0.1, 0.2],
...                  "event_timestamp": [datetime(2024, 1, 1), datetime(2024, 1, 2)]})
>>> stats = FeatureView(name="driver_stats", entities=[Entity(name="driver", join_keys=["driver_id"])],
...                     schema=[Field(name="conv_rate", dtype=Float64)], source=TableSource(rows),
...                     ttl=timedelta(days=2))
>>> store = project.feature_store
>>> print(store.apply([stats]).render())  # doctest: +ELLIPSIS
+ entity driver (<python>, ...)
+ feature view driver_stats (<python>, ...)
2 to add, 0 to change, 0 to remove, 0 unchanged
>>> entity_df = pa.table({"driver_id": [1, 1], "event_timestamp": [datetime(2024, 1, 1, 12), datetime(2024, 1, 9)]})
>>> store.get_historical_features(entity_df, ["driver_stats:conv_rate"]).to_pandas()["conv_rate"].tolist()
[0.1, nan]
>>> store.materialize(datetime(2024, 1, 1), datetime(2024, 1, 3), progress=False)
{'driver_stats': 1}
>>> store.get_online_features(["driver_stats:conv_rate"], [{"driver_id": 1}],
...                           now=datetime(2024, 1, 3)).to_dict()
{'driver_id': [1], 'conv_rate': [0.2]}
>>> project.close()
"""

from __future__ import annotations

import time
import uuid
from contextlib import nullcontext
from functools import cached_property
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConfigError, ConflictError, ValidationError
from loopstack.features.catalog import Catalog
from loopstack.features.plan import Plan, applied, apply_plan, make_plan
from loopstack.features.timeutil import to_us, ttl_us

if TYPE_CHECKING:
    from loopstack.core.project import Project
    from loopstack.features.engine import Engine
    from loopstack.features.feature_log import FeatureLogger
    from loopstack.features.online.base import OnlineStore
    from loopstack.features.retrieval import RetrievalJob
    from loopstack.features.serving import OnlineResponse
    from loopstack.features.skew import SkewReport


class FeatureStore:
    """Definitions, offline retrieval, materialization and online serving of one project."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = project.root
        self.db = project.db
        self._catalog: Catalog | None = None

    @cached_property
    def engine(self) -> Engine:
        """The DuckDB database of offline work, opened on first use: a server that only reads the online
        store never imports DuckDB."""
        from loopstack.features.engine import Engine

        return Engine(self.root)

    # -- definitions ------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self._load_applied()
        return self._catalog

    def _from_files(self) -> Catalog:
        from loopstack.features.loader import load_catalog

        return load_catalog(self.root, list(self.project.config.definitions))

    def _load_applied(self) -> Catalog:
        catalog = self._from_files()
        stored = applied(self.db)
        for obj in catalog.all():
            row = stored.get((obj.kind, obj.name))
            if row is None or row["digest"] != obj.digest():
                state = "is not applied" if row is None else "differs from the applied version"
                raise ConflictError(
                    f"{obj.kind.replace('_', ' ')} {obj.name!r} in {catalog.origin(obj)} {state}; "
                    "run `loopstack apply` to review and apply the plan"
                )
        files = list(self.project.config.definitions)
        if files:  # with definition files, one that was applied and is gone from them is a removal to review
            defined = {(obj.kind, obj.name) for obj in catalog.all()}
            gone = sorted(key for key in stored if key not in defined)
            if gone:
                kind, name = gone[0]
                raise ConflictError(
                    f"{kind.replace('_', ' ')} {name!r} is applied but no longer in the definition files "
                    f"({', '.join(files)}); run `loopstack apply` to review and apply its removal"
                )
        return catalog

    def plan(self, objects: list[Any] | None = None, prune: bool | None = None) -> Plan:
        """What ``apply`` would change, without changing anything."""
        return self._prepare(objects, prune)[1]

    def apply(self, objects: list[Any] | None = None, prune: bool | None = None) -> Plan:
        """Validate definitions, store their new versions, and serve them from now on.

        Without `objects` the project's definition files are applied and
        definitions no longer in them are removed. With `objects` they are
        added to (or replace same-named) definitions; ``prune=True`` removes
        the rest.
        """
        from loopstack.features.materialize import delete_removed, forget

        catalog, plan = self._prepare(objects, prune)
        # A removal an earlier apply was stopped in finishes first: a view applied again gets no old row.
        delete_removed(self)

        def on_remove(connection: Any, change: Any) -> None:
            if change.kind == "feature_view":  # watermark gone, rows marked, with the removal itself
                forget(self, change.name, connection)

        apply_plan(self.db, self.project.events, catalog, plan, on_remove)
        delete_removed(self, [c.name for c in plan.removed if c.kind == "feature_view"])
        self._catalog = catalog
        self.__dict__.pop("_reader", None)
        return plan

    def _prepare(self, objects: list[Any] | None, prune: bool | None) -> tuple[Catalog, Plan]:
        from loopstack.features.validate import validate

        if objects is None:
            catalog, prune = self._from_files(), True if prune is None else prune
        else:
            kept = [] if prune or self._catalog is None else self._catalog_objects(objects)
            catalog = Catalog([*kept, *objects], self._catalog.origins if self._catalog else None)
        validate(catalog, self.engine)
        plan = make_plan(self.db, catalog)
        if not prune:
            plan.changes = [c for c in plan.changes if c.action != "remove"]
        return catalog, plan

    def _catalog_objects(self, objects: list[Any]) -> list[Any]:
        assert self._catalog is not None
        replaced = {(getattr(o, "kind", ""), getattr(o, "name", "")) for o in objects}
        return [o for o in [*self._catalog.all(), *self._catalog.push_sources.values()]
                if (o.kind, o.name) not in replaced]

    # -- offline ---------------------------------------------------------------------------
    def get_historical_features(
        self, entity_df: Any = None, features: Any = None, *, full_feature_names: bool = False,
        as_of_known_time: bool = False, start: Any = None, end: Any = None,
        timestamp_field: str = "event_timestamp", record: bool = True,
    ) -> RetrievalJob:
        """A point-in-time correct training frame (see `loopstack.features.offline`).

        `features` is a list of ``"view:feature"`` references or a feature
        service (object or name). Without `entity_df`, pass `start` and `end`:
        every (entity, event time) of the requested views in that range is
        joined. Timezone-naive timestamps are taken as UTC.
        """
        from loopstack.features.offline import range_spine
        from loopstack.features.retrieval import RetrievalJob
        from loopstack.tracking.datasets import to_arrow

        if features is None:
            raise ValidationError("get_historical_features needs features=[...] or a feature service")
        request = self.catalog.resolve(features, full_feature_names)
        options = {"as_of_known_time": as_of_known_time, "full_feature_names": full_feature_names,
                   "timestamp_field": timestamp_field, "record": record}
        if entity_df is None:
            if start is None or end is None:
                raise ValidationError("pass entity_df=, or start= and end= for all entities in a time range")
            with self.engine.session() as session:
                entity_df = range_spine(session, self.catalog, request, to_us(start), to_us(end), timestamp_field)
            options.update(start=to_us(start), end=to_us(end), entity_df=False)
        return RetrievalJob(self, request, entity_df, to_arrow(entity_df), options)

    def _join(self, request: Any, entity: Any, options: dict[str, Any]) -> Any:
        from loopstack.features.offline import historical

        with self.engine.session() as session:
            return historical(session, self.catalog, request, entity, options["timestamp_field"],
                              options["as_of_known_time"])

    def _record_retrieval(self, job: RetrievalJob) -> str | None:
        from loopstack.features.retrieval import dataset_record, lineage_digest
        from loopstack.tracking.fluent import active_run

        if not job.options.get("record", True):
            return None
        lineage = job.lineage(self.root)
        digest = lineage_digest(lineage)
        table = self.db.table("feature_datasets")
        with self.db.write() as connection:
            self.db.upsert(connection, table, [{
                "digest": digest, "features": lineage["features"], "sources": lineage["sources"],
                "entity_digest": lineage["entity_digest"], "num_rows": job._entity_arrow.num_rows,
                "spec": {"options": lineage["options"], "on_demand": lineage["on_demand"]}, "created_at": time.time(),
            }], keys=("digest",), update=())
        run = active_run()
        if run is not None:
            record = dataset_record(lineage, digest, job._entity_arrow, job.request.service)
            run.store.record_input(run.id, record, "training")
        return digest

    # -- online ----------------------------------------------------------------------------
    @cached_property
    def online(self) -> OnlineStore:
        from loopstack.features.online import open_online_store

        return open_online_store(self.project.config.online_store, self.root, prefix=self._prefix)

    @property
    def _prefix(self) -> str:
        return f"loopstack:{self.project.config.name}:"

    @property
    def online_id(self) -> str:
        url = self.project.config.online_store
        return (url.split("@")[-1] if "@" in url else url)[:200] + "|" + self._prefix

    def materialize(self, start: Any, end: Any, views: list[str] | None = None, *, chunk_size: int | None = None,
                    progress: bool | None = None) -> dict[str, int]:
        """Load the latest row per entity with event time in [start, end] into the online store."""
        start_us, end_us = to_us(start), to_us(end)
        if start_us > end_us:
            raise ConfigError(f"materialize window starts at {start!r}, after its end {end!r}; swap them")
        return self._materialize({v.name: (start_us, end_us) for v in self._online_views(views)}, chunk_size, progress)

    def materialize_incremental(self, end: Any, views: list[str] | None = None, *, chunk_size: int | None = None,
                                progress: bool | None = None) -> dict[str, int]:
        """Materialize each view from just after its watermark (or end - ttl the first time) to `end`.

        A first run of a view without a ttl has no lower bound: starting at 0 (1970-01-01) left every
        older row out of the online store while the offline join served it.
        """
        from loopstack.features.materialize import watermark
        from loopstack.features.offline import MIN_US

        end_us = to_us(end)
        windows = {}
        for view in self._online_views(views):
            mark = watermark(self, view)
            if mark is not None:
                start = mark + 1  # windows are inclusive; the watermark's own instant is done
            else:
                ttl = ttl_us(view.ttl)
                start = end_us - ttl if ttl is not None else MIN_US
            windows[view.name] = (start, end_us)
        return self._materialize(windows, chunk_size, progress)

    def _online_views(self, names: list[str] | None) -> list[Any]:
        views = [self.catalog.view(n) for n in names] if names else list(self.catalog.views.values())
        return [v for v in views if v.online]

    def _materialize(self, windows: dict[str, tuple[int, int]], chunk_size: int | None,
                     progress: bool | None) -> dict[str, int]:
        from loopstack.features.materialize import DEFAULT_CHUNK, delete_removed, materialize_view

        if chunk_size is not None and chunk_size <= 0:
            raise ConfigError(f"chunk_size={chunk_size!r} must be a positive number of rows (default {DEFAULT_CHUNK})")
        delete_removed(self, list(windows))  # rows of a removal cut short never outlive it (see `apply`)
        bar = _progress(progress)
        done = {}
        with bar if bar is not None else nullcontext():
            for name, (start, end) in windows.items():
                done[name] = materialize_view(self, self.catalog.view(name), start, end,
                                              chunk_size or DEFAULT_CHUNK, bar)
        return done

    def push(self, source_name: str, rows: Any, to: str = "online") -> int:
        """Write streaming rows of a push source to the online store (``to="online_and_offline"``: also history)."""
        from loopstack.features.push import push

        return push(self, source_name, rows, to)

    @cached_property
    def _reader(self) -> Any:
        from loopstack.features.serving import OnlineReader

        return OnlineReader(self.catalog, self.online)

    def get_online_features(self, features: Any, entity_rows: Any, *, full_feature_names: bool = False,
                            log: bool | None = None, now: Any = None) -> OnlineResponse:
        """Latest values for entity rows (list of dicts or dict of lists); expired ones come back missing.

        ``now`` overrides the clock used for the ttl check (for replays and tests).
        """
        now_us = to_us(now) if now is not None else None
        plan = self._reader.plan(features, full_feature_names)
        response = self._reader.read_plan(plan, entity_rows, now_us)
        if log or (log is None and plan.log):
            self._log(plan, response, now_us, full_feature_names)
        return response

    def _log(self, plan: Any, response: Any, now_us: int | None, full: bool) -> None:
        import hashlib

        request = plan.request
        name = request.service or "adhoc-" + hashlib.sha256("|".join(request.refs).encode()).hexdigest()[:12]
        response.request_id = uuid.uuid4().hex
        keys = sorted({k for vp in plan.views for k in vp.keys})
        meta = {"features": request.refs, "columns": request.columns, "join_keys": keys, "full": full}
        self.feature_log.log(name, response.request_id, now_us if now_us is not None else time.time_ns() // 1000,
                             response.entities, response.values, meta)

    # -- feature log and skew -----------------------------------------------------------------
    @cached_property
    def feature_log(self) -> FeatureLogger:
        from loopstack.features.feature_log import FeatureLogger

        return FeatureLogger(self.root / ".loopstack" / "feature_logs")

    def skew(self, log: str, since: Any = None, until: Any = None, **options: Any) -> SkewReport:
        """Per-feature mismatch rates between what log `log` served and an offline recomputation."""
        from loopstack.features.skew import check_skew

        return check_skew(self, log, since=since, until=until, **options)

    def close(self) -> None:
        if "feature_log" in self.__dict__:
            self.feature_log.close()
        if "online" in self.__dict__:
            self.online.close()
        if "engine" in self.__dict__:
            self.engine.close()


def _progress(enabled: bool | None) -> Any:
    import sys

    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("materialize {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), transient=False)


__all__ = ["FeatureStore"]
