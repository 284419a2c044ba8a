"""Turn mixed tables into one numeric matrix for the multivariate detectors.

Numerical columns pass through as float64 (nulls as NaN); categorical
columns are frequency-encoded: each category becomes its share in the
reference, and a category the reference never saw becomes 0. Frequency
encoding keeps one column per feature (unlike one-hot) and is what NannyML
uses before its PCA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.drift.data import CATEGORICAL, as_table, infer_kind


@dataclass
class FrequencyEncoder:
    """Learn column kinds and category shares from a reference table; encode any table alike.

    Examples
    --------
    >>> encoder = FrequencyEncoder().fit({"x": [1.0, 2.0], "c": ["a", "a"]})
    >>> encoder.transform({"x": [3.0], "c": ["b"]}).tolist()
    [[3.0, 0.0]]
    """

    columns: Sequence[str] | None = None
    kinds: Mapping[str, str] = field(default_factory=dict)
    shares_: dict[str, dict[Any, float]] = field(default_factory=dict, init=False)
    columns_: list[str] = field(default_factory=list, init=False)

    def fit(self, reference: Any) -> FrequencyEncoder:
        """Record the columns, their kinds and each category's reference share."""
        import pyarrow.compute as pc

        table = as_table(reference)
        self.columns_ = list(self.columns or table.column_names)
        missing = [name for name in self.columns_ if name not in table.column_names]
        if missing:
            raise ValidationError(f"columns {missing} are not in the reference; its columns: {table.column_names}")
        self.shares_ = {}
        for name in self.columns_:
            column = table.column(name)
            if (self.kinds.get(name) or infer_kind(column)) == CATEGORICAL:
                counts = pc.value_counts(pc.drop_null(column)).to_pylist()
                total = sum(item["counts"] for item in counts) or 1
                self.shares_[name] = {item["values"]: item["counts"] / total for item in counts}
        return self

    def transform(self, data: Any) -> np.ndarray:
        """A float64 matrix, one column per fitted column; NaN where a numerical value is null or infinite
        (missing to the multivariate detectors, as the column tests drop them; an infinity crashed the
        classifier and the SVD)."""
        table = as_table(data)
        missing = [name for name in self.columns_ if name not in table.column_names]
        if missing:
            raise ValidationError(f"columns {missing} of the reference are not in the data; columns: "
                                  f"{table.column_names}")
        out = np.empty((table.num_rows, len(self.columns_)), dtype=np.float64)
        for j, name in enumerate(self.columns_):
            column = table.column(name)
            if name in self.shares_:
                out[:, j] = _frequencies(column, self.shares_[name])
            else:
                out[:, j] = column.to_numpy().astype(np.float64, copy=False)
        out[np.isinf(out)] = np.nan
        return out


def _frequencies(column: Any, shares: dict[Any, float]) -> np.ndarray:
    import pyarrow as pa

    encoded = column.dictionary_encode().combine_chunks()
    lookup = np.array([shares.get(key, 0.0) for key in encoded.dictionary.to_pylist()] + [0.0])
    codes = encoded.indices.fill_null(len(lookup) - 1) if encoded.indices.null_count else encoded.indices
    return lookup[pa.array(codes).to_numpy(zero_copy_only=False)]
