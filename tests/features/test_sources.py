"""Every source kind yields the same training frame for the same rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import loopstack.features as lf
from loopstack.core.project import Project

T0 = datetime(2024, 1, 1)
ROWS = pa.table({
    "driver_id": pa.array([1, 1, 2, 2], pa.int64()),
    "event_timestamp": pa.array([T0, T0 + timedelta(hours=2), T0, T0 + timedelta(hours=5)], pa.timestamp("us")),
    "rate": [0.1, 0.2, 0.3, 0.4],
    "label": ["a", "b", "c", None],
})


def _parquet_file(root: Path) -> lf.Source:
    pq.write_table(ROWS, root / "rows.parquet")
    return lf.FileSource(path="rows.parquet")


def _parquet_folder(root: Path) -> lf.Source:
    (root / "parts" / "day=1").mkdir(parents=True)
    pq.write_table(ROWS.slice(0, 2), root / "parts" / "a.parquet")
    pq.write_table(ROWS.slice(2), root / "parts" / "day=1" / "b.parquet")
    return lf.FileSource(path="parts")


def _csv(root: Path) -> lf.Source:
    pacsv.write_csv(ROWS, root / "rows.csv")
    return lf.FileSource(path="rows.csv")


def _tsv_folder(root: Path) -> lf.Source:
    (root / "tsv").mkdir()
    pacsv.write_csv(ROWS.slice(0, 2), root / "tsv" / "a.tsv", pacsv.WriteOptions(delimiter="\t"))
    pacsv.write_csv(ROWS.slice(2), root / "tsv" / "b.tsv", pacsv.WriteOptions(delimiter="\t"))
    return lf.FileSource(path="tsv")


def _sql_with_a_trailing_comment(root: Path) -> lf.Source:
    pq.write_table(ROWS, root / "q.parquet")
    return lf.SqlSource(query="SELECT * FROM read_parquet('q.parquet')  -- every driver")


def _sql(root: Path) -> lf.Source:
    pq.write_table(ROWS, root / "q.parquet")
    return lf.SqlSource(query="SELECT * FROM read_parquet('q.parquet') WHERE driver_id > 0")


SOURCES: dict[str, Callable[[Path], lf.Source]] = {
    "parquet_file": _parquet_file,
    "parquet_folder": _parquet_folder,
    "csv": _csv,
    "sql": _sql,
    "sql_with_a_trailing_comment": _sql_with_a_trailing_comment,
    "tsv_folder": _tsv_folder,
    "arrow": lambda root: lf.TableSource(ROWS),
    "pandas": lambda root: lf.TableSource(ROWS.to_pandas()),
    "polars": lambda root: lf.TableSource(pytest.importorskip("polars").from_arrow(ROWS)),
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_every_source_gives_the_same_answer(kind: str, project: Project) -> None:
    source = SOURCES[kind](project.root)
    view = lf.FeatureView(name="v", entities=[lf.Entity(name="driver", join_keys=["driver_id"])], source=source,
                          schema=[lf.Field(name="rate", dtype=lf.Float64), lf.Field(name="label", dtype=lf.String)],
                          ttl=timedelta(hours=3))
    store = project.feature_store
    store.apply([view])
    entity = pa.table({"driver_id": [1, 2, 2, 1],
                       "event_timestamp": pa.array([T0 + timedelta(hours=h) for h in (1, 1, 6, 6)])})
    got: dict[str, Any] = store.get_historical_features(entity, ["v:rate", "v:label"]).to_arrow().to_pydict()
    assert got["rate"] == [0.1, 0.3, 0.4, None]
    assert got["label"] == ["a", "c", None, None]
    assert store.materialize(T0, T0 + timedelta(hours=6), progress=False) == {"v": 2}
