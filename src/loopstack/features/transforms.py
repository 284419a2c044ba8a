"""On-demand transforms: one Python function over a batch, used unchanged offline and online.

The function is declared once with the features it reads and the fields it
writes. Offline retrieval calls it on the whole training frame; online serving
calls it on the rows of one request. Because it is the same function on the
same column names and types, the two paths cannot drift apart: the first of
the two anti-patterns the skew check exists to catch.

Examples
--------
>>> import pyarrow as pa
>>> import pyarrow.compute as pc
>>> from loopstack.features import Field, Float64, on_demand_feature_view
>>> @on_demand_feature_view(inputs=["driver_stats:conv_rate"], schema=[Field(name="conv_pct", dtype=Float64)],
...                         mode="arrow")
... def conv_pct(batch):
...     return {"conv_pct": pc.multiply(batch["conv_rate"], 100.0)}
>>> conv_pct.transform(pa.table({"conv_rate": [0.5]})).to_pydict()
{'conv_pct': [50.0]}
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loopstack.core.errors import LoopstackError, ValidationError
from loopstack.features.definitions import Definition, Field, check_name, parse_ref

MODES = ("pandas", "arrow")


@dataclass(eq=False, kw_only=True)
class OnDemandFeatureView(Definition):
    """Features computed at read time from other features and request values.

    Parameters
    ----------
    inputs
        Feature references ``view:feature`` the function reads; it sees them
        under their feature names.
    schema
        The output fields; the function returns these columns.
    udf
        ``f(batch) -> batch``: a pandas DataFrame in and out (``mode="pandas"``)
        or an Arrow table in and a table or dict of columns out (``mode="arrow"``).
    request_schema
        Values sent with each request (entity-frame columns offline, entity-row
        keys online) that the function also reads.
    """

    kind = "on_demand_feature_view"
    name: str
    inputs: list[str] = field(default_factory=list)
    schema: list[Field] = field(default_factory=list)
    udf: Callable[[Any], Any]
    mode: str = "pandas"
    request_schema: list[Field] = field(default_factory=list)
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("on-demand feature view", self.name)
        if self.mode not in MODES:
            raise ValidationError(f"on-demand feature view {self.name!r} has mode={self.mode!r}; use one of {MODES}")
        if not self.schema:
            raise ValidationError(f"on-demand feature view {self.name!r} declares no output fields; pass schema=[...]")
        names = [parse_ref(ref)[1] for ref in self.inputs] + [f.name for f in self.request_schema]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise ValidationError(
                f"on-demand feature view {self.name!r} reads {clashes} from more than one place; "
                "the function sees inputs by feature name, so rename one"
            )

    @property
    def input_names(self) -> list[str]:
        return [parse_ref(ref)[1] for ref in self.inputs] + [f.name for f in self.request_schema]

    def refs(self) -> list[str]:
        return [f"{self.name}:{f.name}" for f in self.schema]

    def get_field(self, name: str) -> Field:
        for item in self.schema:
            if item.name == name:
                return item
        raise ValidationError(
            f"on-demand feature view {self.name!r} has no output {name!r}; it has {[f.name for f in self.schema]}"
        )

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name, "inputs": list(self.inputs), "schema": [f.spec() for f in self.schema],
            "request_schema": [f.spec() for f in self.request_schema], "mode": self.mode,
            "udf": _code_digest(self.udf), "description": self.description, "owner": self.owner,
            "tags": dict(self.tags),
        }

    def transform(self, batch: Any) -> Any:
        """Run the function on an Arrow table of its inputs; returns an Arrow table of its outputs."""
        import pyarrow as pa

        argument = batch.to_pandas(types_mapper=_nullable) if self.mode == "pandas" else batch
        result = self._call(argument)
        columns = {}
        for out in self.schema:
            column = _column(result, out.name, self.name)
            if self.mode == "pandas":
                column = _in_input_order(column, argument.index)
            try:
                array = column if isinstance(column, pa.Array) else pa.array(column, from_pandas=True)
                columns[out.name] = array.cast(out.dtype.arrow())
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise ValidationError(
                    f"on-demand feature view {self.name!r} returned {out.name!r} that is not {out.dtype.name}: {exc}"
                ) from None
            self._check_no_overflow(out, array, columns[out.name])
            if len(columns[out.name]) != batch.num_rows:
                raise ValidationError(
                    f"on-demand feature view {self.name!r} returned {len(columns[out.name])} rows of {out.name!r} "
                    f"for {batch.num_rows} input rows; return one row per input row"
                )
        return pa.table(columns)


    def _check_no_overflow(self, out: Field, array: Any, cast: Any) -> None:
        """A finite number that became infinite in the cast (1e300 as Float32) is refused, not served as inf."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not pa.types.is_floating(cast.type) or not pa.types.is_floating(array.type) or cast.type == array.type:
            return
        grew = pc.and_(pc.is_inf(cast), pc.invert(pc.is_inf(array)))
        if pc.any(grew).as_py():
            value = array.filter(grew)[0].as_py()
            raise ValidationError(f"on-demand feature view {self.name!r} returned {out.name!r} = {value!r}, beyond "
                                  f"what {out.dtype.name} holds; declare it Float64")

    def _call(self, argument: Any) -> Any:
        """The function's result; an error it raises names this view, since the caller asked for features.

        The original stays the ``__cause__``; a loopstack error keeps its
        class (a ValidationError the function raises is still a 400).
        """
        try:
            return self.udf(argument)
        except Exception as exc:
            kind = type(exc) if isinstance(exc, LoopstackError) else LoopstackError
            raise kind(f"on-demand feature view {self.name!r} failed: {type(exc).__name__}: {exc}") from exc


def on_demand_feature_view(
    *, inputs: list[str], schema: list[Field], mode: str = "pandas", request_schema: list[Field] | None = None,
    name: str | None = None, description: str = "", owner: str = "",
) -> Callable[[Callable[[Any], Any]], OnDemandFeatureView]:
    """Declare a function as an on-demand feature view (named after the function by default)."""

    def wrap(udf: Callable[[Any], Any]) -> OnDemandFeatureView:
        return OnDemandFeatureView(
            name=name or udf.__name__, inputs=list(inputs), schema=list(schema), udf=udf, mode=mode,
            request_schema=list(request_schema or []), description=description or (udf.__doc__ or "").strip(),
            owner=owner,
        )

    return wrap


def _column(result: Any, name: str, view: str) -> Any:
    try:
        column = result[name]
    except (KeyError, TypeError, IndexError):
        raise ValidationError(
            f"on-demand feature view {view!r} did not return column {name!r}; return a frame or dict holding it"
        ) from None
    return column.combine_chunks() if hasattr(column, "combine_chunks") else column


def _in_input_order(column: Any, index: Any) -> Any:
    """A returned pandas column put back in the input's row order when the function reordered the rows.

    pandas aligns on the index (``df.sort_values(...)`` keeps each row's
    label), so a column whose labels are the input's in another order means
    those rows; reading it by position would give each entity another's value.
    """
    import pandas as pd

    own = column.index if isinstance(column, pd.Series) else None  # a list's .index is a method
    if own is None or own.equals(index) or len(own) != len(index) or not own.is_unique:
        return column
    return column.reindex(index) if own.isin(index).all() else column


def _nullable(arrow_type: Any) -> Any:
    """Integer and boolean inputs as pandas' nullable dtypes (``Int64``, ``boolean``), whatever the batch holds.

    Plain ``to_pandas`` makes an int column float64 (and a bool column object)
    only when the batch has a null: a training frame usually does, one served
    row usually does not, so the same function saw 3.0 offline and 3 online
    (``astype(str)`` gave '3.0' and '3'). Training frames use the same dtypes.
    """
    from loopstack.features.retrieval import _nullable as training_dtype

    return training_dtype(arrow_type)


def _code_digest(udf: Callable[[Any], Any]) -> str:
    """The function's source (or bytecode where source is unavailable) identifies its version."""
    try:
        text = inspect.getsource(udf).encode()
    except (OSError, TypeError):
        code = getattr(udf, "__code__", None)
        text = code.co_code + repr(code.co_consts).encode() if code is not None else repr(udf).encode()
    return hashlib.sha256(text).hexdigest()


__all__ = ["OnDemandFeatureView", "on_demand_feature_view"]
