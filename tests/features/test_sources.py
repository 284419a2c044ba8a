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
from loopstack.core.errors import ValidationError
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


def _parquet_glob(root: Path) -> lf.Source:
    (root / "exports" / "late").mkdir(parents=True)
    pq.write_table(ROWS.slice(0, 2), root / "exports" / "2024-01-01.parquet")
    pq.write_table(ROWS.slice(2), root / "exports" / "late" / "2024-01-02.parquet")
    stale = ROWS.slice(0, 1).set_column(2, "rate", pa.array([9.9]))  # last year's export: not matched
    pq.write_table(stale, root / "exports" / "2023-12-31.parquet")
    return lf.FileSource(path="exports/**/2024-*.parquet")


def _sql_with_a_trailing_comment(root: Path) -> lf.Source:
    pq.write_table(ROWS, root / "q.parquet")
    return lf.SqlSource(query="SELECT * FROM read_parquet('q.parquet')  -- every driver")


def _sql(root: Path) -> lf.Source:
    pq.write_table(ROWS, root / "q.parquet")
    return lf.SqlSource(query="SELECT * FROM read_parquet('q.parquet') WHERE driver_id > 0")


SOURCES: dict[str, Callable[[Path], lf.Source]] = {
    "parquet_file": _parquet_file,
    "parquet_folder": _parquet_folder,
    "parquet_glob": _parquet_glob,
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


def test_a_latin_1_csv_is_read_with_its_encoding(project: Project) -> None:
    (project.root / "rows.csv").write_bytes("driver_id,event_timestamp,rate,label\n1,2024-01-01 00:00:00,0.5,caf\xe9\n"
                                            .encode("latin-1"))
    view = lf.FeatureView(name="v", entities=[lf.Entity(name="driver", join_keys=["driver_id"])],
                          source=lf.FileSource(path="rows.csv", encoding="ISO-8859-1"),
                          schema=[lf.Field(name="label", dtype=lf.String)], ttl=timedelta(hours=3))
    store = project.feature_store
    store.apply([view])
    entity = pa.table({"driver_id": [1], "event_timestamp": pa.array([T0 + timedelta(hours=1)])})
    assert store.get_historical_features(entity, ["v:label"]).to_arrow()["label"].to_pylist() == ["café"]


def test_bad_patterns_and_encodings_are_named(project: Project) -> None:
    with pytest.raises(ValidationError, match=r"encoding='cp1252' for rows.csv; CSV files are read as latin-1, utf-16"):
        lf.FileSource(path="rows.csv", encoding="cp1252")
    pq.write_table(ROWS, project.root / "rows.parquet")
    view = lf.FeatureView(name="v", entities=[lf.Entity(name="driver", join_keys=["driver_id"])],
                          source=lf.FileSource(path="missing/*.parquet"),
                          schema=[lf.Field(name="rate", dtype=lf.Float64)])
    with pytest.raises(ValidationError, match=r"missing/\*.parquet matches no file; write the data there"):
        project.feature_store.apply([view])
    parquet = lf.FileSource(path="rows.parquet", encoding="latin-1")
    with pytest.raises(ValidationError, match="an encoding applies to CSV files only"):
        parquet.format(project.root)


def test_a_push_source_over_a_pattern_does_not_append_offline(project: Project) -> None:
    (project.root / "pushed").mkdir()
    pq.write_table(ROWS, project.root / "pushed" / "rows.parquet")
    pushed = lf.PushSource(name="rows_push", batch_source=lf.FileSource(path="pushed/*.parquet"))
    view = lf.FeatureView(name="v", entities=[lf.Entity(name="driver", join_keys=["driver_id"])], source=pushed,
                          schema=[lf.Field(name="rate", dtype=lf.Float64), lf.Field(name="label", dtype=lf.String)])
    store = project.feature_store
    store.apply([view])
    row = {"driver_id": 3, "event_timestamp": T0, "rate": 0.5, "label": "x"}
    with pytest.raises(ValidationError, match="cannot append offline: its batch source is not a folder"):
        store.push("rows_push", [row], to="online_and_offline")
    assert sorted(p.name for p in (project.root / "pushed").iterdir()) == ["rows.parquet"]  # no "*.parquet" folder


def _label_of(project: Project, source: lf.Source) -> list[Any]:
    view = lf.FeatureView(name="v", entities=[lf.Entity(name="driver", join_keys=["driver_id"])], source=source,
                          schema=[lf.Field(name="label", dtype=lf.String)], ttl=timedelta(hours=3))
    store = project.feature_store
    store.apply([view])
    entity = pa.table({"driver_id": [1], "event_timestamp": pa.array([T0 + timedelta(hours=1)])})
    return store.get_historical_features(entity, ["v:label"]).to_arrow()["label"].to_pylist()


def test_a_literal_path_with_brackets_is_a_file_not_a_pattern(project: Project) -> None:
    # "data[2024]" was taken for a character class: the file it names matched nothing
    (project.root / "data[2024]").mkdir()
    pq.write_table(ROWS, project.root / "data[2024]" / "rows.parquet")
    source = lf.FileSource(path="data[2024]/rows.parquet")
    assert not source.is_pattern(project.root) and source.parquet_file(project.root) is not None
    assert _label_of(project, source) == ["a"]


def test_compressed_csv_files_match_a_pattern(project: Project) -> None:
    import gzip

    (project.root / "exports").mkdir()
    with gzip.open(project.root / "exports" / "2024-01.csv.gz", "wb") as file:
        pacsv.write_csv(ROWS, file)
    # with file_format="csv" every match counts, whatever its suffix; without it, .csv.gz is CSV too
    assert _label_of(project, lf.FileSource(path="exports/*.gz", file_format="csv")) == ["a"]
    assert _label_of(project, lf.FileSource(path="exports/*.csv.gz")) == ["a"]
