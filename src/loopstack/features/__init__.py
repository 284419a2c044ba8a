"""The feature store: define features once, read them point-in-time correct offline and fast online.

Familiar names for Feast users (`Entity`, `FeatureView`, `Field`,
`FeatureService`, ``get_historical_features``, ``get_online_features``,
``materialize``); DuckDB point-in-time joins over Parquet, CSV and Arrow;
SQLite or Redis online stores; a feature log and a skew check.

Examples
--------
>>> from loopstack.features import Entity, Field, Int64
>>> Entity(name="driver", join_keys=["driver_id"]).join_keys
['driver_id']
>>> Field(name="trips", dtype=Int64).dtype
Int64
"""

from __future__ import annotations

from loopstack.core.lazy import lazy_exports

_EXPORTS = {
    "Catalog": "loopstack.features.catalog",
    "Entity": "loopstack.features.definitions",
    "FeatureService": "loopstack.features.definitions",
    "FeatureView": "loopstack.features.definitions",
    "Field": "loopstack.features.definitions",
    "parse_ref": "loopstack.features.definitions",
    "OnlineStore": "loopstack.features.online.base",
    "Plan": "loopstack.features.plan",
    "EXPIRED": "loopstack.features.serving",
    "NOT_FOUND": "loopstack.features.serving",
    "PRESENT": "loopstack.features.serving",
    "OnlineResponse": "loopstack.features.serving",
    "FileSource": "loopstack.features.sources",
    "PushSource": "loopstack.features.sources",
    "Source": "loopstack.features.sources",
    "SqlSource": "loopstack.features.sources",
    "TableSource": "loopstack.features.sources",
    "FeatureStore": "loopstack.features.store",
    "OnDemandFeatureView": "loopstack.features.transforms",
    "on_demand_feature_view": "loopstack.features.transforms",
    "Bool": "loopstack.features.types",
    "Bytes": "loopstack.features.types",
    "Float32": "loopstack.features.types",
    "Float64": "loopstack.features.types",
    "Int32": "loopstack.features.types",
    "Int64": "loopstack.features.types",
    "String": "loopstack.features.types",
    "UnixTimestamp": "loopstack.features.types",
}

__all__ = [
    # definitions
    "Entity",
    "FeatureView",
    "Field",
    "FeatureService",
    "OnDemandFeatureView",
    "on_demand_feature_view",
    "parse_ref",
    # sources
    "Source",
    "FileSource",
    "TableSource",
    "SqlSource",
    "PushSource",
    # types
    "Int32",
    "Int64",
    "Float32",
    "Float64",
    "String",
    "Bool",
    "Bytes",
    "UnixTimestamp",
    # the store
    "FeatureStore",
    "Catalog",
    "Plan",
    "OnlineStore",
    "OnlineResponse",
    "PRESENT",
    "EXPIRED",
    "NOT_FOUND",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
