"""Check definitions against each other and against their sources before anything is stored.

Every problem is reported at once, each on its own line naming the file, the
view and the field, because fixing a definitions file one error per ``apply``
is slow. Sources are described (``DESCRIBE ... LIMIT 0``), never scanned.
"""

from __future__ import annotations

from loopstack.core.errors import LoopstackError, ValidationError
from loopstack.features.catalog import Catalog
from loopstack.features.definitions import FeatureView, parse_ref
from loopstack.features.engine import Engine, Session
from loopstack.features.types import KEY_TYPES, TIMESTAMP_TYPES, is_compatible


def validate(catalog: Catalog, engine: Engine) -> None:
    """Raise one ValidationError listing every problem in `catalog`, or return."""
    problems: list[str] = []
    with engine.session() as session:
        for view in catalog.views.values():
            problems.extend(_check_view(catalog, view, session))
    for odfv in catalog.on_demand.values():
        if odfv.name in catalog.views:  # "name:feature" would reach only the on-demand one
            view = catalog.views[odfv.name]
            problems.append(
                f"{catalog.origin(odfv)}: on-demand feature view {odfv.name!r} has the name of feature view "
                f"{view.name!r} in {catalog.origin(view)}; references 'name:feature' must say which, so rename one"
            )
        for ref in odfv.inputs:
            problems.extend(_check_ref(catalog, ref, f"{catalog.origin(odfv)}: on-demand feature view {odfv.name!r}"))
    for service in catalog.services.values():
        where = f"{catalog.origin(service)}: feature service {service.name!r}"
        try:
            refs = service.refs()
        except LoopstackError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for ref in refs:
            problems.extend(_check_ref(catalog, ref, where, allow_on_demand=True))
    if problems:
        raise ValidationError("definitions are invalid:\n  - " + "\n  - ".join(problems))


def _check_view(catalog: Catalog, view: FeatureView, session: Session) -> list[str]:
    where = f"{catalog.origin(view)}: feature view {view.name!r}"
    problems = [
        f"{where} uses unknown entity {name!r}; define Entity(name={name!r}) or fix the name "
        f"(known: {sorted(catalog.entities)})"
        for name in view.entity_names if name not in catalog.entities
    ]
    if problems:
        return problems
    if not view.schema:
        problems.append(f"{where} declares no features; add schema=[Field(name=..., dtype=...)]")
    try:
        columns = session.columns(view.source, where)
    except LoopstackError as exc:
        return [*problems, str(exc)]
    source = view.source
    problems.extend(_check_column(where, columns, source.timestamp_field, "timestamp column", TIMESTAMP_TYPES,
                                  "set timestamp_field= on the source"))
    if source.created_timestamp_field:
        problems.extend(_check_column(where, columns, source.created_timestamp_field, "created timestamp column",
                                      TIMESTAMP_TYPES, "fix created_timestamp_field= on the source"))
    for key in catalog.join_keys(view):
        problems.extend(_check_column(where, columns, key, "join key", KEY_TYPES, "fix the entity's join_keys"))
    for field in view.schema:
        if field.name not in columns:
            problems.append(f"{where}: field {field.name!r} is not a column of the source (columns: {sorted(columns)})")
        elif not is_compatible(field.dtype, columns[field.name]):
            problems.append(
                f"{where}: field {field.name!r} is declared {field.dtype.name} but the source column is "
                f"{columns[field.name]}; change the dtype or cast the column in the source"
            )
    return problems


def _check_column(where: str, columns: dict[str, str], name: str, role: str, types: frozenset[str],
                  fix: str) -> list[str]:
    if name not in columns:
        return [f"{where}: {role} {name!r} is missing from the source (columns: {sorted(columns)}); {fix}"]
    base = columns[name].upper().split("(")[0]
    if base not in types:
        return [f"{where}: {role} {name!r} has type {columns[name]}, expected one of {sorted(types)}"]
    return []


def _check_ref(catalog: Catalog, ref: str, where: str, allow_on_demand: bool = False) -> list[str]:
    try:
        view_name, feature = parse_ref(ref)
        if allow_on_demand and view_name in catalog.on_demand:
            catalog.on_demand[view_name].get_field(feature)
        else:
            catalog.view(view_name).get_field(feature)
    except LoopstackError as exc:
        return [f"{where} reads {ref!r}: {exc}"]
    return []


__all__ = ["validate"]
