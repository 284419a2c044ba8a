"""The result of ``get_historical_features``: computed once, returned as Arrow, pandas, polars or Parquet.

Reading the result records it as a data version whose identity is its
lineage (feature references, the content hash of every source read, the hash
of the entity frame and the retrieval options), so two identical requests are
one version and any changed input is a new one. Inside a tracking run the
version is also linked to the run, like ``loopstack.log_input``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ValidationError

if TYPE_CHECKING:
    from loopstack.features.catalog import FeatureRequest
    from loopstack.features.store import FeatureStore


class RetrievalJob:
    """A lazy training frame.

    Examples
    --------
    See ``FeatureStore.get_historical_features``; ``job.to_pandas()`` runs it.
    """

    def __init__(self, store: FeatureStore, request: FeatureRequest, entity: Any, entity_arrow: Any,
                 options: dict[str, Any]) -> None:
        self._store = store
        self.request = request
        self._entity = entity
        self._entity_arrow = entity_arrow
        self.options = options
        self._features: Any = None
        self.digest: str | None = None

    @property
    def features(self) -> list[str]:
        return self.request.refs

    def _compute(self) -> Any:
        if self._features is None:
            self._features = self._store._join(self.request, self._entity_arrow, self.options)
            self.digest = self._store._record_retrieval(self)
        return self._features

    def to_arrow(self) -> Any:
        """Entity columns as given, then one column per requested feature."""
        features = self._compute()
        table = self._entity_arrow
        for name in features.column_names:
            if name in table.column_names:
                raise ValidationError(
                    f"the entity frame already has a column {name!r}; rename it or pass full_feature_names=True"
                )
            table = table.append_column(name, features.column(name))
        return table

    def to_pandas(self) -> Any:
        """A pandas frame; integer and boolean features are nullable (``Int64``, ``boolean``), never floats."""
        import pandas as pd

        features = self._compute()
        frame = self._entity if isinstance(self._entity, pd.DataFrame) else self._entity_arrow.to_pandas()
        clash = [name for name in features.column_names if name in frame.columns]
        if clash:
            raise ValidationError(
                f"the entity frame already has a column {clash[0]!r}; rename it or pass full_feature_names=True"
            )
        if not features.num_columns:
            return frame.copy()
        # One table conversion and one concat: assigning column by column cost several times more.
        values = features.to_pandas(types_mapper=_nullable)
        values.index = frame.index
        return pd.concat([frame, values], axis=1)

    def to_polars(self) -> Any:
        import polars as pl

        return pl.from_arrow(self.to_arrow())

    def to_parquet(self, path: str | os.PathLike[str]) -> str:
        """Write the frame to a Parquet file; returns the path."""
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(), path)
        return os.fspath(path)

    def lineage(self, root: Any) -> dict[str, Any]:
        """What identifies this training set: features, source hashes, entity hash, options."""
        from loopstack.tracking.datasets import content_hash

        catalog = self._store.catalog
        sources = {name: catalog.view(name).source.fingerprint(root) for name in self.request.views}
        entity_digest = content_hash(self._entity_arrow) if self.options.get("entity_df", True) else None
        odfvs = {odfv.name: odfv.digest() for odfv in self.request.on_demand}
        return {"features": self.request.refs, "sources": sources, "entity_digest": entity_digest,
                "on_demand": odfvs, "options": {k: v for k, v in self.options.items() if k != "entity_df"}}


def lineage_digest(lineage: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(lineage, sort_keys=True, default=str).encode()).hexdigest()


def dataset_record(lineage: dict[str, Any], digest: str, table: Any, service: str | None) -> dict[str, Any]:
    """A row for tracking's ``datasets`` table."""
    return {
        "digest": digest, "name": service or "features",
        "source": "feature_store:" + ",".join(lineage["features"]), "num_rows": table.num_rows,
        "schema": {field.name: str(field.type) for field in table.schema},
        "stats": {"lineage": lineage}, "created_at": time.time(),
    }


def _nullable(arrow_type: Any) -> Any:
    import pandas as pd
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return {8: pd.Int8Dtype(), 16: pd.Int16Dtype(), 32: pd.Int32Dtype()}.get(arrow_type.bit_width, pd.Int64Dtype())
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    return None


__all__ = ["RetrievalJob"]
