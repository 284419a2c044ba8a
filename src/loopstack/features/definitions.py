"""Entities, fields, feature views and feature services: the nouns a Feast user knows.

Definitions are plain objects written in the project's Python files. Each can
describe itself as a JSON spec; the sha256 of that spec is its version in the
metadata DB, so ``apply`` knows exactly what was added, changed or removed.

Examples
--------
>>> from datetime import timedelta
>>> import pyarrow as pa
>>> from loopstack.features import Entity, FeatureView, Field, TableSource, Float64
>>> driver = Entity(name="driver", join_keys=["driver_id"])
>>> stats = FeatureView(
...     name="driver_stats", entities=[driver], ttl=timedelta(days=2),
...     schema=[Field(name="conv_rate", dtype=Float64)],
...     source=TableSource(pa.table({"driver_id": [1], "conv_rate": [0.5],
...                                  "event_timestamp": pa.array([0], pa.timestamp("us"))})),
... )
>>> stats.refs()
['driver_stats:conv_rate']
>>> len(stats.digest())
64
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ValidationError
from loopstack.features.types import DType, Int64

if TYPE_CHECKING:
    from loopstack.features.sources import Source

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")  # \Z: "$" also matches before a final newline


def check_name(kind: str, name: str) -> str:
    """Names become SQL identifiers and Redis keys, so they stay simple."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValidationError(
            f"{kind} name {name!r} is not allowed; use a letter or '_' first, then letters, digits or '_'"
        )
    return name


def digest_of(spec: Mapping[str, Any]) -> str:
    """sha256 of a spec's canonical JSON: the version id of a definition."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


class Definition:
    """Common behaviour: a kind, a name, a spec and its digest."""

    kind = "definition"
    name: str

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def digest(self) -> str:
        return digest_of(self.spec())


@dataclass(frozen=True, kw_only=True)
class Field:
    """A typed column of a feature view (or an output of an on-demand transform).

    Examples
    --------
    >>> from loopstack.features import Field, Int64
    >>> Field(name="trips", dtype=Int64).spec()
    {'name': 'trips', 'dtype': 'Int64', 'description': ''}
    """

    name: str
    dtype: DType
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("field", self.name)
        if not isinstance(self.dtype, DType):
            raise ValidationError(
                f"field {self.name!r} has dtype {self.dtype!r}; use a type from loopstack.features "
                "such as Float64, Int64 or String"
            )

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.name, "description": self.description}


@dataclass(eq=False, kw_only=True)
class Entity(Definition):
    """The thing features describe (a driver, a card), keyed by one or more join keys.

    Examples
    --------
    >>> Entity(name="driver").join_keys
    ['driver']
    """

    kind = "entity"
    name: str
    join_keys: list[str] = field(default_factory=list)
    dtype: DType = Int64
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("entity", self.name)
        self.join_keys = list(self.join_keys) or [self.name]
        for key in self.join_keys:
            check_name(f"join key of entity {self.name!r}", key)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "join_keys": self.join_keys, "dtype": self.dtype.name,
                "description": self.description, "owner": self.owner, "tags": dict(self.tags)}


@dataclass(eq=False, kw_only=True)
class FeatureView(Definition):
    """Typed features of some entities, read from one source, valid for `ttl` after their event time.

    ``ttl=None`` means a value never expires. ``online=False`` keeps a view out
    of materialization (offline only).
    """

    kind = "feature_view"
    name: str
    entities: list[Entity | str] = field(default_factory=list)
    schema: list[Field] = field(default_factory=list)
    source: Source
    ttl: timedelta | None = None
    online: bool = True
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("feature view", self.name)
        if not self.entities:
            raise ValidationError(
                f"feature view {self.name!r} has no entities; pass entities=[Entity(name=..., join_keys=[...])] "
                "naming the key columns its rows are looked up by"
            )
        if self.ttl is not None and (not isinstance(self.ttl, timedelta) or self.ttl <= timedelta(0)):
            raise ValidationError(
                f"feature view {self.name!r} has ttl={self.ttl!r}; use a positive timedelta, or None for no expiry"
            )
        names = [f.name for f in self.schema]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValidationError(f"feature view {self.name!r} declares field(s) {duplicates} twice; keep one of each")

    @property
    def entity_names(self) -> list[str]:
        return [e if isinstance(e, str) else e.name for e in self.entities]

    @property
    def features(self) -> list[Field]:
        return list(self.schema)

    def get_field(self, name: str) -> Field:
        for item in self.schema:
            if item.name == name:
                return item
        raise ValidationError(
            f"feature view {self.name!r} has no feature {name!r}; it has {[f.name for f in self.schema]}"
        )

    def refs(self, names: Iterable[str] | None = None) -> list[str]:
        """Feature references ``view:feature`` for `names` (default: all features)."""
        chosen = [f.name for f in self.schema] if names is None else [self.get_field(n).name for n in names]
        return [f"{self.name}:{n}" for n in chosen]

    def __getitem__(self, names: Sequence[str]) -> list[str]:
        """A projection, as in Feast: ``FeatureService(features=[view[["a", "b"]]])``."""
        return self.refs([names] if isinstance(names, str) else names)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name, "entities": self.entity_names, "schema": [f.spec() for f in self.schema],
            "source": self.source.spec(), "ttl_s": None if self.ttl is None else self.ttl.total_seconds(),
            "online": self.online, "description": self.description, "owner": self.owner, "tags": dict(self.tags),
        }


@dataclass(eq=False, kw_only=True)
class FeatureService(Definition):
    """The named set of features one model reads, so training and serving ask for the same thing.

    `features` holds views (all their features), projections ``view[["a"]]``
    and ``"view:feature"`` strings. ``log=True`` records every online read of
    the service in the feature log (the input to the skew check).

    Examples
    --------
    >>> FeatureService(name="ranker", features=["driver_stats:conv_rate"]).refs()
    ['driver_stats:conv_rate']
    """

    kind = "feature_service"
    name: str
    features: list[Any] = field(default_factory=list)
    log: bool = False
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("feature service", self.name)

    def refs(self) -> list[str]:
        out: list[str] = []
        for item in self.features:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list | tuple):
                out.extend(item)
            elif hasattr(item, "refs"):
                out.extend(item.refs())
            else:
                raise ValidationError(
                    f"feature service {self.name!r} lists {item!r}; use a feature view, view[[...]] or 'view:feature'"
                )
        return out

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "features": self.refs(), "log": self.log, "description": self.description,
                "owner": self.owner, "tags": dict(self.tags)}


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``view:feature`` into its parts, with an error that shows the expected form."""
    if not isinstance(ref, str) or ref.count(":") != 1 or ref.startswith(":") or ref.endswith(":"):
        raise ValidationError(f"feature reference {ref!r} is malformed; write 'view_name:feature_name'")
    view, name = ref.split(":")
    return view, name


__all__ = ["Definition", "Entity", "FeatureService", "FeatureView", "Field", "digest_of", "parse_ref"]
