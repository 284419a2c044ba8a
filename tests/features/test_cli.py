"""`loopstack features` refuses windows, sizes and thresholds that cannot mean anything, in one line."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from tests.conftest import cli_fails

import loopstack as ls
from loopstack.core.project import Project
from loopstack.features.cli import features

T0 = datetime(2024, 1, 1)
DEFINITIONS = '''
from datetime import timedelta
from loopstack.features import Entity, FeatureService, FeatureView, Field, FileSource, Float64

driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=2),
                    schema=[Field(name="conv_rate", dtype=Float64)], source=FileSource(path="stats.parquet"))
ranker = FeatureService(name="ranker", features=[stats], log=True)
'''


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "proj"
    Project.init(root, name="feat").close()
    (root / "features.py").write_text(DEFINITIONS)
    config = yaml.safe_load((root / "loopstack.yaml").read_text())
    (root / "loopstack.yaml").write_text(yaml.safe_dump({**config, "definitions": ["features.py"]}))
    pq.write_table(pa.table({"driver_id": [1, 2], "event_timestamp": pa.array([T0, T0], pa.timestamp("us")),
                             "conv_rate": [0.5, 0.7]}), root / "stats.parquet")
    opened = Project.open(root)
    opened.feature_store.apply()
    opened.feature_store.materialize(T0, T0 + timedelta(days=1), progress=False)
    opened.feature_store.get_online_features("ranker", [{"driver_id": 1}], now=T0 + timedelta(hours=1))
    opened.feature_store.feature_log.flush()
    yield opened
    opened.close()


def _fails(project: Project, *args: str, code: int = 1) -> str:
    return cli_fails(features, *args, code=code, obj={"project_path": str(project.root)})


def test_materialize_refuses_a_reversed_window_and_a_bad_chunk_size(project: Project) -> None:
    text = _fails(project, "materialize", "--start", "2024-01-02", "--end", "2024-01-01")
    assert "starts at '2024-01-02', after its end '2024-01-01'" in text
    for size in ("0", "-3"):
        text = _fails(project, "materialize", "--start", "2024-01-01", "--end", "2024-01-02", "--chunk-size", size)
        assert f"chunk_size={size} must be a positive number of rows" in text


def test_materialize_with_no_feature_views_says_so(tmp_path) -> None:
    """It printed nothing and exited 0: a silent success with nothing done."""
    from click.testing import CliRunner

    Project.init(tmp_path / "empty", name="empty").close()
    done = CliRunner().invoke(features, ["materialize"], obj={"project_path": str(tmp_path / "empty")})
    assert done.exit_code == 0 and "no feature views to materialize" in done.output and "loopstack apply" in done.output


def test_skew_and_compact_refuse_meaningless_bounds(project: Project) -> None:
    text = _fails(project, "skew", "ranker", "--since", "2030-01-01", "--until", "2020-01-01")
    assert "since='2030-01-01' is after until='2020-01-01'" in text
    assert "-1.0 is not in the range 0<=x<=1" in _fails(project, "skew", "ranker", "--fail-above", "-1", code=2)
    assert "-5.0 is not in the range x>=0" in _fails(project, "compact", "ranker", "--older-than", "-5", code=2)


def test_a_binary_definitions_file_is_named_as_such(project: Project) -> None:
    (project.root / "features.py").write_bytes(b"x = 1\n\x00\x01\x02")
    with pytest.raises(ls.ConfigError, match=r"features.py \(listed in loopstack.yaml `definitions`\) holds binary"):
        project.feature_store.apply()


def test_apply_with_no_definition_files_listed_says_how_to_list_them(tmp_path: Path) -> None:
    """`definitions: []` (what init writes) read as "no changes: the metadata DB matches the definitions"."""
    from click.testing import CliRunner

    from loopstack.features.cli import apply

    Project.init(tmp_path, name="empty").close()
    result = CliRunner().invoke(apply, ["--dry-run"], obj={"project_path": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ("no definition files are listed; "
                                     "add `definitions: [features.py]` to loopstack.yaml")
