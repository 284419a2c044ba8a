"""Online reads: the serving hot path.

A request is planned once per feature list (views, keys, decoders) and the
plan is cached, so a read is: build keys, one backend call, decode JSON,
check ttl. The ttl is enforced here, on read, for every backend: a value
older than its view's ttl comes back as missing with status ``"expired"``
and its age, never as a silently stale number. A value whose event time is
after the read's moment (``now=`` replaying the past) is ``"not_found"``.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter
from typing import Any

from loopstack.core.errors import ValidationError
from loopstack.core.jsonio import loads
from loopstack.features.catalog import Catalog, FeatureRequest
from loopstack.features.definitions import FeatureService
from loopstack.features.materialize import KEY_SEPARATOR
from loopstack.features.online.base import OnlineStore
from loopstack.features.timeutil import ttl_us

PRESENT, EXPIRED, NOT_FOUND = "present", "expired", "not_found"
MAX_PLANS = 1024  # cached plans per reader; past it the cache starts over
_IDENTITY = {"Int32", "Int64", "Float32", "Float64", "String", "Bool"}


@dataclass
class _ViewPlan:
    name: str
    keys: list[str]
    ttl: int | None
    features: list[tuple[str, str, Callable[[Any], Any] | None]]  # feature, slot, decoder
    missing: dict[str, Any] = field(init=False)  # the row of an absent or expired record: all None
    slots: list[str] = field(init=False)
    decoders: list[Callable[[Any], Any] | None] | None = field(init=False)  # None: every value is used as read
    _names: list[str] = field(init=False, repr=False)
    _get: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._names = [name for name, _, _ in self.features]
        self.slots = [slot for _, slot, _ in self.features]
        decoders = [decoder for _, _, decoder in self.features]
        self.decoders = decoders if any(decoders) else None
        self.missing = dict.fromkeys(self._names)
        self._get = itemgetter(*self._names) if len(self._names) > 1 else None

    def columns(self, rows: list[dict[str, Any]]) -> list[list[Any]]:
        """One list per feature, transposed in C; a stored record without some feature reads None for it."""
        if self._get is not None and rows:
            try:
                return [list(column) for column in zip(*map(self._get, rows), strict=True)]
            except KeyError:  # a record written before the feature was added to the view
                pass
        return [[row.get(name) for row in rows] for name in self._names]


@dataclass
class _Plan:
    request: FeatureRequest
    views: list[_ViewPlan]
    input_types: dict[str, Any] = field(default_factory=dict)
    log: bool = False  # a service's log flag: every read of it goes to the feature log
    columns: list[str] = field(init=False)  # the response's feature columns, in order ...
    refs: list[str] = field(init=False)  # ... and the slot each one reads

    def __post_init__(self) -> None:
        self.columns = [out.column for out in self.request.outputs]
        self.refs = [out.ref for out in self.request.outputs]


class OnlineResponse:
    """Feature values for a list of entity rows, with a status and an age (seconds) per value.

    ``status[column][i]`` is ``"present"``, ``"expired"`` (older than the
    view's ttl: the value is None, the age says how old it was) or
    ``"not_found"``.
    """

    def __init__(self, entities: dict[str, list[Any]], values: dict[str, list[Any]], status: dict[str, list[str]],
                 age: dict[str, list[float | None]], request_id: str | None = None) -> None:
        self.entities = entities
        self.values = values
        self.status = status
        self.age = age
        self.request_id = request_id

    def to_dict(self, include_status: bool = False) -> dict[str, list[Any]]:
        """Entity columns then feature columns; with `include_status`, ``<col>__status`` and ``<col>__age_s`` too."""
        out = {**self.entities, **self.values}
        if include_status:
            for name in self.values:
                out[f"{name}__status"] = self.status[name]
                out[f"{name}__age_s"] = self.age[name]
        return out

    def to_arrow(self, include_status: bool = False) -> Any:
        import pyarrow as pa

        return pa.table(self.to_dict(include_status))

    def to_pandas(self, include_status: bool = False) -> Any:
        return self.to_arrow(include_status).to_pandas()

    def __repr__(self) -> str:
        return f"OnlineResponse({self.to_dict()!r})"


class OnlineReader:
    """Plans and runs online reads against one catalog and one online store."""

    def __init__(self, catalog: Catalog, online: OnlineStore) -> None:
        self.catalog = catalog
        self.online = online
        self._plans: dict[Any, _Plan] = {}

    def plan(self, features: Any, full_feature_names: bool) -> _Plan:
        """The cached plan of `features`; a request of another kind is planned each time, not cached."""
        content = _content_key(features)
        if content is None:
            return self._make_plan(features, full_feature_names)
        cache_key = (content, full_feature_names)
        plan = self._plans.get(cache_key)
        if plan is None:
            if len(self._plans) >= MAX_PLANS:  # feature lists built per request must not grow the cache forever
                self._plans.clear()
            plan = self._plans[cache_key] = self._make_plan(features, full_feature_names)
        return plan

    def _make_plan(self, features: Any, full: bool) -> _Plan:
        request = self.catalog.resolve(features, full)
        views = []
        for name, wanted in request.views.items():
            view = self.catalog.view(name)
            decoders = []
            for feature in wanted:
                dtype = view.get_field(feature).dtype
                decoders.append((feature, f"{name}:{feature}", None if dtype.name in _IDENTITY else dtype.decode))
            views.append(_ViewPlan(name, self.catalog.join_keys(view), ttl_us(view.ttl), decoders))
        plan = _Plan(request, views, log=self._logged(features, request))
        for odfv in request.on_demand:
            for ref in odfv.inputs:
                view_name, feature = ref.split(":")
                plan.input_types[ref] = self.catalog.view(view_name).get_field(feature).dtype.arrow()
        return plan

    def _logged(self, features: Any, request: FeatureRequest) -> bool:
        """The service's log flag: a FeatureService object's own (applied or not, as offline uses its own
        refs), else the applied service's of that name."""
        if isinstance(features, FeatureService):
            return features.log
        return request.service is not None and self.catalog.services[request.service].log

    def read(self, features: Any, entity_rows: Any, full_feature_names: bool = False,
             now_us: int | None = None) -> OnlineResponse:
        return self.read_plan(self.plan(features, full_feature_names), entity_rows, now_us)

    def read_plan(self, plan: _Plan, entity_rows: Any, now_us: int | None = None) -> OnlineResponse:
        """One backend call for every view of `plan`, then decode, ttl check and on-demand transforms."""
        entities, count = _columns(entity_rows)
        now = now_us if now_us is not None else time.time_ns() // 1000
        requests = [(vp.name, _keys(vp.keys, entities, count)) for vp in plan.views]
        records = _read_known(self.online, requests) if requests else []
        slots: dict[str, list[Any]] = {}
        status: dict[str, list[str]] = {}
        ages: dict[str, list[float | None]] = {}
        for vp, found in zip(plan.views, records, strict=True):
            rows, view_status, view_age = _decode(found, vp.ttl, now, vp.missing)
            columns = vp.columns(rows)
            if vp.decoders is not None:
                columns = [column if decoder is None else [decoder(v) for v in column]
                           for decoder, column in zip(vp.decoders, columns, strict=True)]
            slots.update(zip(vp.slots, columns, strict=True))
            status.update(dict.fromkeys(vp.slots, view_status))
            ages.update(dict.fromkeys(vp.slots, view_age))
        _run_on_demand(plan, entities, count, slots, status, ages)
        return OnlineResponse(entities, _by_column(plan, slots), _by_column(plan, status), _by_column(plan, ages))


def _content_key(features: Any) -> Any:
    """What a plan depends on, as a hashable value; None for a request that cannot be keyed so.

    A FeatureService is keyed by its name, refs and log flag, never by ``id()``: CPython gives a new
    object the id of a freed one, whose plan (other columns) it would then be served.
    """
    if isinstance(features, str):
        return features
    if isinstance(features, FeatureService):
        return ("service", features.name, tuple(features.refs()), features.log)
    if isinstance(features, list | tuple) and all(isinstance(ref, str) for ref in features):
        return tuple(features)
    return None


def _by_column(plan: _Plan, by_ref: dict[str, Any]) -> dict[str, Any]:
    return dict(zip(plan.columns, map(by_ref.__getitem__, plan.refs), strict=True))


def _columns(entity_rows: Any) -> tuple[dict[str, list[Any]], int]:
    """Entity rows as columns: accepts a list of dicts or a dict of lists."""
    if type(entity_rows) is list and len(entity_rows) == 1 and type(entity_rows[0]) is dict:
        return {key: [value] for key, value in entity_rows[0].items()}, 1  # the serving case, without ABC checks
    if isinstance(entity_rows, Mapping):
        columns = {k: list(v) for k, v in entity_rows.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValidationError(f"entity_rows columns have different lengths {sorted(lengths)}; make them equal")
        return columns, lengths.pop() if lengths else 0
    if isinstance(entity_rows, Sequence) and not isinstance(entity_rows, str):
        columns = {}
        for row in entity_rows:
            for key in row:
                columns.setdefault(key, [])
        for key, column in columns.items():
            column.extend(row.get(key) for row in entity_rows)
        return columns, len(entity_rows)
    raise ValidationError(f"entity_rows must be a list of dicts or a dict of lists, not {type(entity_rows).__name__}")


def _keys(join_keys: list[str], entities: dict[str, list[Any]], count: int) -> list[str | None]:
    """The stored key of each entity row, None where a join key is missing (null or NaN)."""
    if not count:  # an empty list of rows names no columns at all
        return []
    try:
        if len(join_keys) == 1:
            return [v if type(v) is str else _key_text(v) for v in entities[join_keys[0]]]
        columns = [entities[k] for k in join_keys]
    except KeyError as exc:
        raise ValidationError(
            f"entity rows lack join key {exc.args[0]!r} (they have {sorted(entities)}); add it to each row"
        ) from None
    keys: list[str | None] = []
    for i in range(count):
        parts = [_key_text(c[i]) for c in columns]
        keys.append(None if None in parts else KEY_SEPARATOR.join(parts))  # type: ignore[arg-type]
    return keys


def _key_text(value: Any) -> str | None:
    """A key value as materialization stored it (DuckDB's VARCHAR cast); None for a missing one.

    A null must match nothing, as offline, rather than the text "None". The
    rule the offline join follows too (``offline._key_cast``): a bool is no
    key and matches nothing (it read "True", offline 'true'); an integral
    float (pandas turns an int column with a gap into floats) is the integer
    it holds, for string keys as well; so is an integral Decimal (``Decimal("2.0")``
    is 2, which is no ``numbers.Real``).
    """
    if value is None or type(value).__name__ in ("NAType", "NaTType", "bool", "bool_"):
        return None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return str(int(value)) if value == value.to_integral_value() else str(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # NumPy's float32 too
        number = float(value)
        if number != number:
            return None
        if number.is_integer():
            return str(int(number))
    return str(value)


def _read_known(online: OnlineStore, requests: list[tuple[str, list[str | None]]]) -> list[list[Any]]:
    """The backend's records per request; an entity row without a key gets no record and costs no lookup."""
    if not any(None in keys for _, keys in requests):
        return online.read(requests)  # type: ignore[arg-type]
    answers = online.read([(view, [k for k in keys if k is not None]) for view, keys in requests])
    aligned = []
    for (_, keys), found in zip(requests, answers, strict=True):
        records = iter(found)
        aligned.append([None if key is None else next(records) for key in keys])
    return aligned


def _decode(found: list[Any], ttl: int | None, now: int,
            missing: dict[str, Any]) -> tuple[list[Any], list[str], list[float | None]]:
    """Rows (dicts) with status and age; every live payload is parsed in one call.

    At 100 entities, one parse of ``[p1,p2,...]`` costs about two thirds of
    100 parses: a parser's per-call overhead is a third of the work. The
    parser is orjson (values are floats, 64-bit integers and strings), with
    the standard library for what it refuses (a NaN written as ``NaN``).
    """
    rows: list[Any] = [missing] * len(found)
    status: list[str] = [NOT_FOUND] * len(found)
    ages: list[float | None] = [None] * len(found)
    live: list[int] = []
    payloads: list[str] = []
    for i, record in enumerate(found):
        if record is None:
            continue
        ts, payload = record
        age = now - ts
        if age < 0:  # written after `now` (a replay of a past moment): not known yet, as offline
            continue
        ages[i] = age / 1e6
        if ttl is not None and age > ttl:
            status[i] = EXPIRED
        else:
            status[i] = PRESENT
            live.append(i)
            payloads.append(payload)
    if payloads:
        for i, row in zip(live, loads("[" + ",".join(payloads) + "]"), strict=True):
            rows[i] = row
    return rows, status, ages


def _run_on_demand(plan: _Plan, entities: dict[str, list[Any]], count: int, slots: dict[str, list[Any]],
                   status: dict[str, list[str]], ages: dict[str, list[float | None]]) -> None:
    if not plan.request.on_demand:
        return
    import pyarrow as pa

    for odfv in plan.request.on_demand:
        inputs = {ref.split(":")[1]: pa.array(slots[ref], plan.input_types[ref]) for ref in odfv.inputs}
        for item in odfv.request_schema:
            if item.name not in entities and count:
                raise ValidationError(
                    f"on-demand feature view {odfv.name!r} needs request value {item.name!r} in each entity row"
                )
            inputs[item.name] = _request_values(odfv.name, item, entities.get(item.name, []))
        result = odfv.transform(pa.table(inputs) if inputs else pa.table({"__n": [0] * count}))
        input_status = [status[ref] for ref in odfv.inputs]
        input_ages = [ages[ref] for ref in odfv.inputs]
        combined = [next((s[i] for s in input_status if s[i] != PRESENT), PRESENT) for i in range(count)]
        oldest = [max((a[i] for a in input_ages if a[i] is not None), default=None) for i in range(count)]
        for out in odfv.schema:
            ref = f"{odfv.name}:{out.name}"
            slots[ref] = result.column(out.name).to_pylist()
            status[ref], ages[ref] = combined, oldest


def _request_values(odfv_name: str, item: Any, values: list[Any]) -> Any:
    """Request values as their declared type (the offline join casts its column the same way)."""
    import pyarrow as pa

    try:
        return pa.array(values, item.dtype.arrow())
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise ValidationError(
            f"on-demand feature view {odfv_name!r}: request value {item.name!r} in {values!r} is not a "
            f"{item.dtype.name} ({exc}); send a {item.dtype.name} in each entity row"
        ) from None


__all__ = ["EXPIRED", "NOT_FOUND", "PRESENT", "OnlineReader", "OnlineResponse"]
