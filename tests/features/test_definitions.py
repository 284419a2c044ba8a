"""Definitions and ``apply``: validation errors, the plan, versions by content hash."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import loopstack.features as lf
from loopstack.core.errors import ConflictError, ValidationError
from loopstack.core.project import Project

DEFINITIONS = """
from datetime import timedelta
from loopstack.features import Entity, FeatureService, FeatureView, Field, FileSource, Float64, {trips_type}

driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(
    name="driver_stats", entities=[{entity}], ttl=timedelta(days=2),
    schema=[Field(name="conv_rate", dtype=Float64), Field(name="trips", dtype={trips_type}){extra}],
    source=FileSource(path="data/stats.parquet"),
)
ranker = FeatureService(name="ranker", features=[stats[["conv_rate"]]])
"""


def _project(tmp_path: Path, **fmt: str) -> Project:
    from datetime import datetime, timedelta

    import pyarrow as pa

    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    t0 = datetime(2024, 1, 1)
    table = pa.table({"driver_id": [1, 1, 2], "event_timestamp": [t0, t0 + timedelta(days=1), t0],
                      "conv_rate": [0.1, 0.2, 0.3], "trips": [1, 2, 3]})
    pq.write_table(table.append_column("speed", table.column("conv_rate")), root / "data" / "stats.parquet")
    _write(root, **fmt)
    return Project.init(root, name="defs", definitions=["features.py"])


def _write(root: Path, trips_type: str = "Int64", entity: str = "driver", extra: str = "") -> None:
    (root / "features.py").write_text(DEFINITIONS.format(trips_type=trips_type, entity=entity, extra=extra))


def test_apply_prints_plan_and_versions_by_content_hash(tmp_path: Path) -> None:
    project = _project(tmp_path)
    store = project.feature_store
    plan = store.apply()
    assert {(c.kind, c.name) for c in plan.added} == {
        ("entity", "driver"), ("feature_view", "driver_stats"), ("feature_service", "ranker")}
    assert "3 to add, 0 to change, 0 to remove" in plan.render()
    assert store.plan().changes == []
    _write(project.root, extra=', Field(name="speed", dtype=Float64)')
    plan = store.plan()
    assert [(c.action, c.name) for c in plan.changes] == [("change", "driver_stats")]
    assert plan.changes[0].old != plan.changes[0].new
    store.apply()
    versions = project.db.table("feature_object_versions")
    with project.db.read() as connection:
        kept = connection.execute(versions.select().where(versions.c.name == "driver_stats")).fetchall()
    assert len(kept) == 2  # the old version is kept, not overwritten
    kinds = [e.kind for e in project.events.list(kind="features.apply")]
    assert kinds == ["features.apply", "features.apply"]
    project.close()


def test_removed_definitions_show_in_plan_and_go(tmp_path: Path) -> None:
    project = _project(tmp_path)
    project.feature_store.apply()
    (project.root / "features.py").write_text(
        "from loopstack.features import Entity\ndriver = Entity(name='driver', join_keys=['driver_id'])\n")
    plan = project.feature_store.plan()
    assert sorted((c.action, c.name) for c in plan.changes) == [("remove", "driver_stats"), ("remove", "ranker")]
    assert "- feature view driver_stats (features.py" in plan.render()
    project.feature_store.apply()
    assert project.feature_store.plan().changes == []
    project.close()


def test_unapplied_file_changes_are_refused_at_read_time(tmp_path: Path) -> None:
    project = _project(tmp_path)
    project.feature_store.apply()
    _write(project.root, extra=', Field(name="speed", dtype=Float64)')
    fresh = lf.FeatureStore(project)
    with pytest.raises(ConflictError, match=r"driver_stats.*features.py.*differs.*loopstack apply"):
        _ = fresh.catalog
    project.close()


def test_a_definition_removed_from_the_files_but_not_applied_is_refused_at_read_time(tmp_path: Path) -> None:
    """The service disappeared from `features list` and reads said "known services: []" while it was still
    applied; like a changed definition, a removal is reviewed with `apply` first."""
    project = _project(tmp_path)
    project.feature_store.apply()
    source = (project.root / "features.py").read_text()
    (project.root / "features.py").write_text(source.replace('ranker = FeatureService(name="ranker", '
                                                             'features=[stats[["conv_rate"]]])', ""))
    fresh = lf.FeatureStore(project)
    with pytest.raises(ConflictError, match=r"feature service 'ranker' is applied but no longer in .*features.py.*"
                                            r"loopstack apply"):
        _ = fresh.catalog
    fresh.apply()  # the removal, reviewed
    assert [c.name for c in lf.FeatureStore(project).catalog.all() if c.kind == "feature_service"] == []
    project.close()


def test_objects_applied_from_python_without_definition_files_are_not_refused(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p", name="py")
    entity = lf.Entity(name="driver", join_keys=["driver_id"])
    project.feature_store.apply([entity])
    _ = lf.FeatureStore(project).catalog  # no definition files: nothing to compare the applied objects with
    project.close()


def test_unknown_entity_names_file_view_and_entity(tmp_path: Path) -> None:
    project = _project(tmp_path, entity='"rider"')
    with pytest.raises(ValidationError, match=r"features.py: feature view 'driver_stats' uses unknown entity 'rider'"):
        project.feature_store.apply()
    project.close()


def test_type_mismatch_names_file_view_field_and_types(tmp_path: Path) -> None:
    project = _project(tmp_path, trips_type="String")
    with pytest.raises(ValidationError) as info:
        project.feature_store.apply()
    assert "features.py: feature view 'driver_stats': field 'trips' is declared String" in str(info.value)
    assert "BIGINT" in str(info.value)
    project.close()


def test_missing_timestamp_and_field_columns_are_all_reported(tmp_path: Path) -> None:
    project = _project(tmp_path, extra=', Field(name="nope", dtype=Float64)')
    text = (project.root / "features.py").read_text().replace('path="data/stats.parquet"',
                                                              'path="data/stats.parquet", timestamp_field="ts"')
    (project.root / "features.py").write_text(text)
    with pytest.raises(ValidationError) as info:
        project.feature_store.apply()
    message = str(info.value)
    assert "timestamp column 'ts' is missing from the source" in message
    assert "field 'nope' is not a column of the source" in message
    project.close()


def test_duplicate_names_across_files_name_both_files(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project.root / "more.py").write_text(textwrap.dedent("""
        from loopstack.features import Entity
        other = Entity(name="driver", join_keys=["id"])
    """))
    config = (project.root / "loopstack.yaml").read_text().replace("- features.py", "- features.py\n- more.py")
    (project.root / "loopstack.yaml").write_text(config)
    reopened = Project(project.root, project.config.model_copy(update={"definitions": ["features.py", "more.py"]}))
    with pytest.raises(ValidationError, match=r"entity 'driver' is defined twice: in features.py and in more.py"):
        lf.FeatureStore(reopened).plan()
    project.close()


def test_service_with_unknown_feature_is_rejected(project: Project, driver_rows) -> None:  # type: ignore[no-untyped-def]
    view = lf.FeatureView(name="v", entities=[lf.Entity(name="driver_id")], source=lf.TableSource(driver_rows()),
                          schema=[lf.Field(name="conv_rate", dtype=lf.Float64)])
    service = lf.FeatureService(name="s", features=["v:conv_rate", "v:missing"])
    with pytest.raises(ValidationError, match=r"feature service 's' reads 'v:missing'"):
        project.feature_store.apply([view, service])


def test_bad_names_and_ttl_are_rejected_at_definition() -> None:
    with pytest.raises(ValidationError, match="name 'bad name'"):
        lf.Entity(name="bad name")
    driver = lf.Entity(name="driver", join_keys=["driver_id"])
    with pytest.raises(ValidationError, match="positive timedelta"):
        lf.FeatureView(name="v", entities=[driver], source=lf.SqlSource(query="select 1"),
                       ttl=__import__("datetime").timedelta(0))
    with pytest.raises(ValidationError, match="declares field"):
        lf.FeatureView(name="v", entities=[driver], source=lf.SqlSource(query="select 1"),
                       schema=[lf.Field(name="a", dtype=lf.Int64), lf.Field(name="a", dtype=lf.Int64)])
    with pytest.raises(ValidationError, match="no entities; pass entities="):
        lf.FeatureView(name="v", source=lf.SqlSource(query="select 1"))


def test_an_on_demand_view_named_like_a_feature_view_is_rejected(project: Project, driver_rows: Any) -> None:
    # it was applied, and every 'v:feature' reference then resolved to the on-demand view
    view = lf.FeatureView(name="v", entities=[lf.Entity(name="driver_id")], source=lf.TableSource(driver_rows()),
                          schema=[lf.Field(name="conv_rate", dtype=lf.Float64)])
    clash = lf.on_demand_feature_view(inputs=["v:conv_rate"], schema=[lf.Field(name="y", dtype=lf.Float64)],
                                      name="v")(lambda df: {"y": df["conv_rate"]})
    with pytest.raises(ValidationError, match=r"on-demand feature view 'v' has the name of feature view 'v'"):
        project.feature_store.apply([view, clash])
    assert project.feature_store.plan([view]).render().count("+") == 2  # nothing was stored


def test_on_demand_view_version_follows_its_code() -> None:
    def make(factor: float) -> lf.OnDemandFeatureView:
        if factor == 1.0:
            def scaled(df):  # type: ignore[no-untyped-def]
                return {"y": df["conv_rate"]}
        else:
            def scaled(df):  # type: ignore[no-untyped-def]
                return {"y": df["conv_rate"] * 2}
        return lf.on_demand_feature_view(inputs=["v:conv_rate"], schema=[lf.Field(name="y", dtype=lf.Float64)])(scaled)

    assert make(1.0).digest() != make(2.0).digest()
    assert make(1.0).digest() == make(1.0).digest()


def test_an_on_demand_frame_returned_in_another_row_order_is_read_by_its_index() -> None:
    # the rows were read by position, so sorting inside the function gave each entity another's value
    import pandas as pd
    import pyarrow as pa

    @lf.on_demand_feature_view(inputs=["v:x"], schema=[lf.Field(name="y", dtype=lf.Float64)])
    def ranked(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"y": df["x"] * 10}).sort_values("y", ascending=False)

    @lf.on_demand_feature_view(inputs=["v:x"], schema=[lf.Field(name="y", dtype=lf.Float64)])
    def relabelled(df: pd.DataFrame) -> pd.DataFrame:  # labels that are not the input's: read by position
        return pd.DataFrame({"y": (df["x"] * 10).to_numpy()}, index=[7, 8, 9])

    batch = pa.table({"x": [1.0, 3.0, 2.0]})
    assert ranked.transform(batch).column("y").to_pylist() == [10.0, 30.0, 20.0]
    assert relabelled.transform(batch).column("y").to_pylist() == [10.0, 30.0, 20.0]


def test_a_pandas_function_sees_the_same_dtypes_with_or_without_nulls_in_the_batch() -> None:
    # an int column became float64 (and a bool column object) only when the batch held a null: offline
    # frames usually do, one served row does not, so one function gave '3.0' offline and '3' online
    import pandas as pd
    import pyarrow as pa

    @lf.on_demand_feature_view(inputs=["v:n", "v:flag"], schema=[lf.Field(name="text", dtype=lf.String),
                                                                  lf.Field(name="negated", dtype=lf.Bool)])
    def described(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"text": df["n"].astype(str), "negated": ~df["flag"]})

    served = described.transform(pa.table({"n": pa.array([3], pa.int64()), "flag": [True]}))
    training = described.transform(pa.table({"n": pa.array([3, None], pa.int64()), "flag": [True, None]}))
    assert training.slice(0, 1).to_pydict() == served.to_pydict() == {"text": ["3"], "negated": [False]}


def test_a_pandas_function_may_return_a_dict_of_lists() -> None:
    # a list has an .index method, which was taken for a pandas index: AttributeError
    import pyarrow as pa

    @lf.on_demand_feature_view(inputs=["v:x"], schema=[lf.Field(name="y", dtype=lf.Float64)])
    def listed(df: Any) -> Any:
        return {"y": [value * 2 for value in df["x"]]}

    assert listed.transform(pa.table({"x": [1.0, 2.0]})).column("y").to_pylist() == [2.0, 4.0]



def test_an_on_demand_function_that_raises_is_named_in_the_error(project: Project, driver_rows: Any) -> None:
    # the function's own exception reached the caller with no word of which on-demand view raised it
    from datetime import datetime

    from loopstack.core.errors import LoopstackError

    view = lf.FeatureView(name="v", entities=[lf.Entity(name="driver_id")], source=lf.TableSource(driver_rows()),
                          schema=[lf.Field(name="conv_rate", dtype=lf.Float64)])

    @lf.on_demand_feature_view(inputs=["v:conv_rate"], schema=[lf.Field(name="y", dtype=lf.Float64)])
    def broken(df: Any) -> Any:
        return {"y": df["conv_rate"] / df["conv_rat"]}  # a typo: pandas raises KeyError

    store = project.feature_store
    store.apply([view, broken])
    store.materialize(datetime(2024, 1, 1), datetime(2024, 1, 10), progress=False)
    entity = {"driver_id": [1], "event_timestamp": [datetime(2024, 1, 9)]}
    for read in (lambda: store.get_online_features(["broken:y"], [{"driver_id": 1}]),
                 lambda: store.get_historical_features(entity, ["broken:y"]).to_arrow()):
        with pytest.raises(LoopstackError, match=r"on-demand feature view 'broken' failed: KeyError") as info:
            read()
        assert isinstance(info.value.__cause__, KeyError)


def test_an_on_demand_value_a_float32_cannot_hold_is_refused(project: Project, driver_rows: Any) -> None:
    # 1e300 declared Float32 was cast to inf and served as such
    from datetime import datetime

    view = lf.FeatureView(name="v", entities=[lf.Entity(name="driver_id")], source=lf.TableSource(driver_rows()),
                          schema=[lf.Field(name="conv_rate", dtype=lf.Float64)])

    @lf.on_demand_feature_view(inputs=["v:conv_rate"], schema=[lf.Field(name="y", dtype=lf.Float32)])
    def huge(df: Any) -> Any:
        return {"y": df["conv_rate"] * 1e300}

    store = project.feature_store
    store.apply([view, huge])
    store.materialize(datetime(2024, 1, 1), datetime(2024, 1, 10), progress=False)
    with pytest.raises(ValidationError, match=r"returned 'y' = .*beyond what Float32 holds; declare it Float64"):
        store.get_online_features(["huge:y"], [{"driver_id": 1}])


def test_exported_names_are_what_we_mean_to_export() -> None:
    assert set(lf.__all__) == {
        "Entity", "FeatureView", "Field", "FeatureService", "OnDemandFeatureView", "on_demand_feature_view",
        "parse_ref", "Source", "FileSource", "TableSource", "SqlSource", "PushSource", "Int32", "Int64", "Float32",
        "Float64", "String", "Bool", "Bytes", "UnixTimestamp", "FeatureStore", "Catalog", "Plan", "OnlineStore",
        "OnlineResponse", "PRESENT", "EXPIRED", "NOT_FOUND",
    }
    assert all(hasattr(lf, name) for name in lf.__all__)


def test_two_inline_entities_of_one_name_with_other_join_keys_are_refused(project: Project, driver_rows: Any) -> None:
    # the second was silently dropped, and its view then "lacked" the join key the first one declared
    rows = driver_rows().append_column("id", driver_rows().column("driver_id"))
    by_driver_id = lf.FeatureView(name="a", entities=[lf.Entity(name="driver", join_keys=["driver_id"])],
                                  source=lf.TableSource(rows), schema=[lf.Field(name="conv_rate", dtype=lf.Float64)])
    by_id = lf.FeatureView(name="b", entities=[lf.Entity(name="driver", join_keys=["id"])],
                           source=lf.TableSource(rows), schema=[lf.Field(name="trips", dtype=lf.Int64)])
    expected = (r"entity 'driver' is defined twice with different join keys: "
                r"\['driver_id'\] in feature view 'a' .* and \['id'\] in feature view 'b'")
    with pytest.raises(ValidationError, match=expected):
        project.feature_store.apply([by_driver_id, by_id])
    same_keys = lf.FeatureView(name="b", entities=[lf.Entity(name="driver", join_keys=["driver_id"])],
                               source=lf.TableSource(rows), schema=[lf.Field(name="trips", dtype=lf.Int64)])
    project.feature_store.apply([by_driver_id, same_keys])  # two objects that agree are one entity
    assert project.feature_store.catalog.join_keys(same_keys) == ["driver_id"]
