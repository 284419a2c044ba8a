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

from loopstack.features.catalog import Catalog
from loopstack.features.definitions import Entity, FeatureService, FeatureView, Field
from loopstack.features.online.base import OnlineStore
from loopstack.features.plan import Plan
from loopstack.features.serving import EXPIRED, NOT_FOUND, PRESENT, OnlineResponse
from loopstack.features.sources import FileSource, PushSource, Source, SqlSource, TableSource
from loopstack.features.store import FeatureStore
from loopstack.features.transforms import OnDemandFeatureView, on_demand_feature_view
from loopstack.features.types import Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp

__all__ = [
    # definitions
    "Entity",
    "FeatureView",
    "Field",
    "FeatureService",
    "OnDemandFeatureView",
    "on_demand_feature_view",
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
