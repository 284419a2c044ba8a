"""The set of definitions a store serves, and the resolution of feature references against it.

A `Catalog` is built from objects (collected from the project's definition
files or passed to ``apply``). It knows which file defined what, so every
error names the file as well as the view and field.

Examples
--------
>>> import pyarrow as pa
>>> from loopstack.features import Entity, FeatureView, Field, Float64, TableSource
>>> src = TableSource(pa.table({"d": [1], "x": [1.0], "event_timestamp": pa.array([0], pa.timestamp("us"))}))
>>> view = FeatureView(name="v", entities=[Entity(name="d")], schema=[Field(name="x", dtype=Float64)], source=src)
>>> catalog = Catalog([view])
>>> sorted(catalog.entities)
['d']
>>> catalog.resolve(["v:x"]).columns
['x']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loopstack.core.errors import NotFoundError, ValidationError
from loopstack.features.definitions import Definition, Entity, FeatureService, FeatureView, parse_ref
from loopstack.features.sources import PushSource
from loopstack.features.transforms import OnDemandFeatureView

KINDS = ("entity", "feature_view", "on_demand_feature_view", "feature_service")


@dataclass
class Output:
    """One requested feature: where it comes from and the column it lands in."""

    ref: str
    view: str
    feature: str
    column: str
    on_demand: bool


@dataclass
class FeatureRequest:
    """Resolved references: base features per view, on-demand views, output columns in order."""

    views: dict[str, list[str]] = field(default_factory=dict)
    on_demand: list[OnDemandFeatureView] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    service: str | None = None

    @property
    def columns(self) -> list[str]:
        return [o.column for o in self.outputs]

    @property
    def refs(self) -> list[str]:
        return [o.ref for o in self.outputs]


class Catalog:
    """Entities, feature views, on-demand views, services and push sources, by name."""

    def __init__(self, objects: Iterable[Any], origins: dict[int, str] | None = None) -> None:
        self.origins = dict(origins or {})
        self.entities: dict[str, Entity] = {}
        self.views: dict[str, FeatureView] = {}
        self.on_demand: dict[str, OnDemandFeatureView] = {}
        self.services: dict[str, FeatureService] = {}
        self.push_sources: dict[str, PushSource] = {}
        for obj in objects:
            self._add(obj)
        for view in list(self.views.values()):
            for entity in view.entities:
                if isinstance(entity, Entity):
                    self._add_inline_entity(entity, view)

    def origin(self, obj: Any) -> str:
        return self.origins.get(id(obj), "<python>")

    def all(self) -> list[Definition]:
        return [*self.entities.values(), *self.views.values(), *self.on_demand.values(), *self.services.values()]

    def by_kind(self, kind: str) -> dict[str, Definition]:
        return {"entity": self.entities, "feature_view": self.views, "on_demand_feature_view": self.on_demand,
                "feature_service": self.services}[kind]  # type: ignore[return-value]

    def view(self, name: str) -> FeatureView:
        try:
            return self.views[name]
        except KeyError:
            raise NotFoundError(
                f"no feature view {name!r}; known views: {sorted(self.views)}; define it and run `loopstack apply`"
            ) from None

    def join_keys(self, view: FeatureView) -> list[str]:
        keys: list[str] = []
        for name in view.entity_names:
            keys.extend(self.entities[name].join_keys)
        return keys

    def views_of_push_source(self, name: str) -> list[FeatureView]:
        if name not in self.push_sources:
            raise NotFoundError(f"no push source {name!r}; known push sources: {sorted(self.push_sources)}")
        return [v for v in self.views.values() if isinstance(v.source, PushSource) and v.source.name == name]

    # -- resolving references -----------------------------------------------------------
    def resolve(self, features: Sequence[str] | FeatureService | str,
                full_feature_names: bool = False) -> FeatureRequest:
        """Resolve refs or a service (object or name) to the views and columns to read."""
        request = FeatureRequest()
        if isinstance(features, str) and ":" not in features:
            features = self.services.get(features) or _missing_service(features, self.services)
        if isinstance(features, FeatureService):
            request.service = features.name
            features = features.refs()
        if isinstance(features, str):
            raise ValidationError(f"features={features!r} is one string; pass a list of 'view:feature' references")
        for ref in features:
            self._resolve_one(ref, request, full_feature_names)
        seen: dict[str, str] = {}
        for out in request.outputs:
            if out.column in seen:
                raise ValidationError(
                    f"features {seen[out.column]!r} and {out.ref!r} both land in column {out.column!r}; "
                    "pass full_feature_names=True to name columns 'view__feature'"
                )
            seen[out.column] = out.ref
        return request

    def _resolve_one(self, ref: str, request: FeatureRequest, full: bool) -> None:
        view_name, feature = parse_ref(ref)
        column = f"{view_name}__{feature}" if full else feature
        if view_name in self.on_demand:
            odfv = self.on_demand[view_name]
            odfv.get_field(feature)
            if odfv not in request.on_demand:
                request.on_demand.append(odfv)
                for input_ref in odfv.inputs:
                    base_view, base_feature = parse_ref(input_ref)
                    self._need(request, base_view, base_feature)
            request.outputs.append(Output(ref, view_name, feature, column, on_demand=True))
            return
        self._need(request, view_name, feature)
        request.outputs.append(Output(ref, view_name, feature, column, on_demand=False))

    def _need(self, request: FeatureRequest, view_name: str, feature: str) -> None:
        view = self.view(view_name)
        view.get_field(feature)
        needed = request.views.setdefault(view_name, [])
        if feature not in needed:
            needed.append(feature)

    # -- building -------------------------------------------------------------------------
    def _add(self, obj: Any, origin: str | None = None) -> None:
        if origin is not None:
            self.origins.setdefault(id(obj), origin)
        if isinstance(obj, PushSource):
            self._put(self.push_sources, obj, "push source")
            return
        table = {Entity: self.entities, FeatureView: self.views, OnDemandFeatureView: self.on_demand,
                 FeatureService: self.services}.get(type(obj))
        if table is None:
            raise ValidationError(f"cannot register {obj!r}; pass Entity, FeatureView, OnDemandFeatureView, "
                                  "FeatureService or PushSource objects")
        self._put(table, obj, obj.kind.replace("_", " "))
        if (isinstance(obj, FeatureView) and isinstance(obj.source, PushSource)
                and obj.source.name not in self.push_sources):
            self._add(obj.source, self.origin(obj))

    def _add_inline_entity(self, entity: Entity, view: FeatureView) -> None:
        """Register an entity written inside a view; one of the same name must have the same join keys.

        Rows are looked up by the registered entity's keys, so a second
        definition with other keys would be ignored and the view then reported
        as missing a join key it never declared.
        """
        known = self.entities.get(entity.name)
        if known is None:
            self._add(entity, self.origin(view))
        elif known.join_keys != entity.join_keys:
            raise ValidationError(
                f"entity {entity.name!r} is defined twice with different join keys: {known.join_keys} in "
                f"{self._where(known)} and {entity.join_keys} in feature view {view.name!r} ({self.origin(view)}); "
                "use one Entity object, or give the two different names"
            )

    def _where(self, entity: Entity) -> str:
        """Where `entity` was defined: its file, and the view it was written inside, if any."""
        inside = next((v.name for v in self.views.values() if any(e is entity for e in v.entities)), None)
        return self.origin(entity) if inside is None else f"feature view {inside!r} ({self.origin(entity)})"

    def _put(self, table: dict[str, Any], obj: Any, kind: str) -> None:
        existing = table.get(obj.name)
        if existing is not None and existing is not obj:
            raise ValidationError(
                f"{kind} {obj.name!r} is defined twice: in {self.origin(existing)} and in {self.origin(obj)}; "
                "rename or remove one"
            )
        table[obj.name] = obj


def _missing_service(name: str, services: dict[str, FeatureService]) -> FeatureService:
    raise NotFoundError(f"no feature service {name!r}; known services: {sorted(services)}")


__all__ = ["Catalog", "FeatureRequest", "Output"]
