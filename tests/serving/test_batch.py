"""`loopstack predict`: file to file, exact chunks, bounded memory, resume after an interruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import loopstack as ls
from loopstack.serving.batch import predict_file


class Counting:
    """Wraps a model; counts predicted rows, samples Arrow memory, and can fail on a given call."""

    def __init__(self, model, fail_on_call: int | None = None) -> None:
        self.model, self.fail_on_call = model, fail_on_call
        self.calls, self.rows, self.peak = 0, 0, 0
        self.n_features_in_ = model.n_features_in_

    def predict_proba(self, X):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated interruption")
        self.rows += len(X)
        self.peak = max(self.peak, pa.total_allocated_bytes())
        return self.model.predict_proba(X)

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)

    def __getstate__(self):  # a resume knows a model by its pickle: the wrapper's counters are not the model
        return {"model": self.model}


def _write_input(path: Path, X: np.ndarray, row_group: int) -> None:
    table = pa.table({"id": np.arange(len(X)), **{f"x{j}": X[:, j] for j in range(X.shape[1])}})
    pq.write_table(table, path, row_group_size=row_group)


def test_resumes_from_the_last_finished_chunk(clf, tmp_path: Path) -> None:
    X = np.random.default_rng(1).normal(size=(5_000, 20))
    _write_input(tmp_path / "in.parquet", X, row_group=777)  # row groups do not line up with chunks
    out = tmp_path / "out.parquet"
    first = Counting(clf, fail_on_call=4)
    with pytest.raises(KeyboardInterrupt):
        predict_file(first, tmp_path / "in.parquet", out, chunk_rows=1_000, keep=["id"])
    assert not out.exists() and len(list((tmp_path / "out.parquet.parts").glob("part-*.parquet"))) == 3

    second = Counting(clf)
    summary = predict_file(second, tmp_path / "in.parquet", out, chunk_rows=1_000, keep=["id"])
    assert summary.resumed_chunks == 3 and summary.chunks == 5 and summary.rows == 5_000
    assert second.rows == 2_000  # only the unfinished chunks were scored again
    result = pq.read_table(out).to_pandas()
    assert list(result.id) == list(range(5_000))
    np.testing.assert_allclose(result[["proba_0", "proba_1"]].to_numpy(), clf.predict_proba(X))
    assert not (tmp_path / "out.parquet.parts").exists()


def test_a_changed_input_starts_over(clf, tmp_path: Path) -> None:
    X = np.random.default_rng(2).normal(size=(300, 20))
    _write_input(tmp_path / "in.parquet", X, row_group=100)
    with pytest.raises(KeyboardInterrupt):
        predict_file(Counting(clf, fail_on_call=2), tmp_path / "in.parquet", tmp_path / "o.parquet", chunk_rows=100,
                     keep=["id"])
    _write_input(tmp_path / "in.parquet", X[::-1].copy(), row_group=50)
    again = Counting(clf)
    summary = predict_file(again, tmp_path / "in.parquet", tmp_path / "o.parquet", chunk_rows=100, keep=["id"])
    assert summary.resumed_chunks == 0 and again.rows == 300


class Weighted:
    """A cheap classifier with a weight: two of them are the same class, trained differently."""

    n_features_in_ = 2

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-self.weight * np.asarray(X).sum(axis=1)))
        return np.column_stack([1 - p, p])


@pytest.mark.parametrize(("weight", "resumed"), [(1.0, 2), (5.0, 0)])
def test_a_model_without_a_digest_resumes_only_its_own_chunks(tmp_path: Path, weight: float, resumed: int) -> None:
    """The manifest named such a model by its class name: a retrained model of the same class resumed the first
    model's chunks, and the output mixed both models' predictions. It is now known by a hash of its pickle."""
    X = np.random.default_rng(3).normal(size=(500, 2))
    _write_input(tmp_path / "in.parquet", X, row_group=100)
    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        predict_file(Counting(Weighted(1.0), fail_on_call=3), tmp_path / "in.parquet", out, chunk_rows=100)
    rerun = Counting(Weighted(weight))  # a new object, as a new process would load it
    summary = predict_file(rerun, tmp_path / "in.parquet", out, chunk_rows=100)
    assert summary.resumed_chunks == resumed and rerun.rows == 500 - 100 * resumed
    np.testing.assert_allclose(pq.read_table(out).to_pandas()[["proba_0", "proba_1"]].to_numpy(),
                               Weighted(weight).predict_proba(X))


def test_a_model_that_cannot_be_pickled_starts_over_and_says_so(tmp_path: Path) -> None:
    X = np.random.default_rng(4).normal(size=(300, 2))
    _write_input(tmp_path / "in.parquet", X, row_group=100)
    out = tmp_path / "out.parquet"
    model = Weighted(2.0)
    model.transform = lambda X: X  # a lambda does not pickle
    with pytest.raises(KeyboardInterrupt):  # no checkpoint yet: nothing to warn about (warnings are errors here)
        predict_file(Counting(model, fail_on_call=2), tmp_path / "in.parquet", out, chunk_rows=100)
    rerun = Counting(model)
    with pytest.warns(UserWarning, match="cannot be pickled.*starts over"):
        summary = predict_file(rerun, tmp_path / "in.parquet", out, chunk_rows=100)
    assert summary.resumed_chunks == 0 and rerun.rows == 300
    np.testing.assert_allclose(pq.read_table(out).to_pandas()[["proba_0", "proba_1"]].to_numpy(),
                               model.predict_proba(X))


class Logistic:
    """A cheap classifier, so the memory test measures reading, not trees."""

    n_features_in_ = 20

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-np.asarray(X).sum(axis=1)))
        return np.column_stack([1 - p, p])


def test_memory_stays_bounded_by_the_chunk(tmp_path: Path) -> None:
    X = np.random.default_rng(3).normal(size=(40_000, 20))  # 6.4 MB of features
    _write_input(tmp_path / "in.parquet", X, row_group=2_000)
    model = Counting(Logistic())
    base = pa.total_allocated_bytes()
    predict_file(model, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=1_000, keep=["id"])
    assert model.rows == 40_000
    assert model.peak - base < 4 * 2**20  # a few chunks and row groups in flight, never the whole file


def test_input_must_fit_the_model(clf, tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1.0]}), tmp_path / "in.parquet")
    with pytest.raises(ls.ValidationError, match="20 unnamed features but the input has 1"):
        predict_file(clf, tmp_path / "in.parquet", tmp_path / "out.parquet")
    with pytest.raises(ls.ValidationError, match="--keep column"):
        predict_file(clf, tmp_path / "in.parquet", tmp_path / "out.parquet", keep=["nope"])


def test_an_unnamed_models_fields_are_matched_by_their_names_as_the_server_does(clf, tmp_path: Path) -> None:
    """x0..x19 in another order scored each row with the features swapped, and a missing x3 let `id` stand in."""
    X = np.random.default_rng(2).normal(size=(50, 20))
    reversed_columns = {f"x{j}": X[:, j] for j in reversed(range(20))}
    pq.write_table(pa.table({"id": np.arange(50), **reversed_columns}), tmp_path / "in.parquet")
    predict_file(clf, tmp_path / "in.parquet", tmp_path / "out.parquet", keep=["id"])
    scored = pq.read_table(tmp_path / "out.parquet").to_pandas()
    np.testing.assert_allclose(scored[["proba_0", "proba_1"]].to_numpy(), clf.predict_proba(X))
    without_x3 = {k: v for k, v in reversed_columns.items() if k != "x3"}
    pq.write_table(pa.table({"id": np.arange(50), **without_x3}), tmp_path / "gap.parquet")
    with pytest.raises(ls.ValidationError, match=r"lacks model field\(s\) \['x3'\]"):
        predict_file(clf, tmp_path / "gap.parquet", tmp_path / "gap-out.parquet")


@pytest.mark.parametrize("name", ["prediction", "proba_1", "prediction_0"])
def test_a_kept_column_named_like_an_output_is_refused(clf, tmp_path: Path, name: str) -> None:
    """Before, the model's output silently replaced the kept input column of the same name."""
    X = np.random.default_rng(0).normal(size=(4, 20))
    table = pa.table({**{f"f{j}": X[:, j] for j in range(20)}, name: ["a", "b", "c", "d"]})
    pq.write_table(table, tmp_path / "in.parquet")
    with pytest.raises(ls.ValidationError, match=rf"--keep \['{name}'\] would be overwritten"):
        predict_file(clf, tmp_path / "in.parquet", tmp_path / "out.parquet", keep=[name])
    assert not (tmp_path / "out.parquet").exists()


def test_cli_refuses_a_chunk_size_below_1_before_loading_anything(tmp_path: Path) -> None:
    from loopstack.serving.cli import predict

    pq.write_table(pa.table({"a": [1.0]}), tmp_path / "in.parquet")
    result = CliRunner().invoke(predict, ["--model", "m@x", "--input", str(tmp_path / "in.parquet"), "--output",
                                          str(tmp_path / "o.parquet"), "--chunk-rows", "0"],
                                obj={"project_path": str(tmp_path / "no-project")})
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output


def test_cli_predict_with_a_registered_model(sqlite_project, data, tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from loopstack.serving.cli import predict

    X, y = data
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(20)])
    model = LogisticRegression().fit(frame, y)
    with ls.start_run(project=sqlite_project) as run:
        run.log_model(model, "model", example=frame.head())
    ls.register_model(run.id, "model", name="fraud", alias="champion", project=sqlite_project)
    pq.write_table(pa.Table.from_pandas(frame.assign(key=range(len(frame)))), tmp_path / "in.parquet")
    result = CliRunner().invoke(predict, [
        "--model", "fraud@champion", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "o.parquet"),
        "--keep", "key", "--chunk-rows", "128",
    ], obj={"project_path": str(sqlite_project.root)})
    assert result.exit_code == 0, result.output
    out = pq.read_table(tmp_path / "o.parquet").to_pandas()
    assert list(out.key) == list(range(len(frame)))
    np.testing.assert_allclose(out[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(frame))


def test_input_columns_are_checked_in_every_file_before_scoring(clf, tmp_path: Path) -> None:
    """A text column where the model takes numbers, or a later file of a folder lacking a column, failed inside
    the model or pyarrow (no file or column named) after the earlier chunks were scored."""
    X = np.random.default_rng(4).normal(size=(10, 20))
    folder = tmp_path / "in"
    folder.mkdir()
    _write_input(folder / "a.parquet", X, row_group=10)
    text = pa.table({"id": np.arange(10), **{f"x{j}": X[:, j] for j in range(19)}, "x19": ["high"] * 10})
    pq.write_table(text, folder / "b.parquet")
    model = Counting(clf)
    with pytest.raises(ls.ValidationError, match=r"b.parquet' column 'x19' holds string; the model takes numbers"):
        predict_file(model, folder, tmp_path / "out.parquet", chunk_rows=5, keep=["id"])
    pq.write_table(text.drop_columns(["x19"]), folder / "b.parquet")
    with pytest.raises(ls.ValidationError, match=r"b.parquet' lacks column\(s\) \['x19'\]"):
        predict_file(model, folder, tmp_path / "out.parquet", chunk_rows=5, keep=["id"])
    assert model.rows == 0 and not (tmp_path / "out.parquet.parts").exists()


def test_an_empty_input_is_refused_without_leaving_a_checkpoint(clf, tmp_path: Path) -> None:
    _write_input(tmp_path / "in.parquet", np.empty((0, 20)), row_group=10)
    with pytest.raises(ls.ValidationError, match="has no rows; nothing was written"):
        predict_file(clf, tmp_path / "in.parquet", tmp_path / "out.parquet", keep=["id"])
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out.parquet.parts").exists()


def test_a_resume_redoes_a_part_left_empty_or_truncated_by_a_power_cut(clf, tmp_path: Path) -> None:
    """A part renamed into place before its bytes reached the disk can come back empty or cut short; every
    resume then failed reading it until --no-resume. Now the resume stops at the first unreadable part."""
    X = np.random.default_rng(5).normal(size=(5_000, 20))
    _write_input(tmp_path / "in.parquet", X, row_group=1_000)
    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        predict_file(Counting(clf, fail_on_call=4), tmp_path / "in.parquet", out, chunk_rows=1_000, keep=["id"])
    parts = tmp_path / "out.parquet.parts"
    (parts / "part-000001.parquet").write_bytes(b"")
    second_part = (parts / "part-000002.parquet").read_bytes()
    (parts / "part-000002.parquet").write_bytes(second_part[: len(second_part) // 2])

    again = Counting(clf)
    summary = predict_file(again, tmp_path / "in.parquet", out, chunk_rows=1_000, keep=["id"])
    assert summary.resumed_chunks == 1 and again.rows == 4_000
    result = pq.read_table(out).to_pandas()
    assert list(result.id) == list(range(5_000))
    np.testing.assert_allclose(result[["proba_0", "proba_1"]].to_numpy(), clf.predict_proba(X))


def test_a_part_reaches_the_disk_before_its_name(clf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts were renamed into place unsynced: after a power cut the name could survive and the bytes not."""
    import os

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the synced files")
    synced, fsync = [], os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    _write_input(tmp_path / "in.parquet", np.random.default_rng(6).normal(size=(30, 20)), row_group=30)
    predict_file(clf, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=10, keep=["id"])
    parts = str(tmp_path / "out.parquet.parts")
    for index in range(3):
        tmp = f"{parts}/.part-{index:06d}.parquet.tmp"
        assert tmp in synced and parts in synced[synced.index(tmp) + 1:]  # the bytes, then the rename


def test_a_multi_output_classifier_scores_each_row_with_its_own_probabilities(tmp_path: Path) -> None:
    """Its predict_proba is a list with one array per output: read output-first, a chunk of as many rows as
    outputs gave each row another output's probabilities, and other chunks failed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1).astype(int)
    model = MultiOutputClassifier(LogisticRegression()).fit(X, y)
    pq.write_table(pa.table({f"x{j}": X[:6, j] for j in range(3)}), tmp_path / "in.parquet")
    predict_file(model, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=2)
    out = pq.read_table(tmp_path / "out.parquet")
    expected = np.stack(model.predict_proba(X[:6]), axis=1).reshape(6, -1)  # (rows, outputs x classes)
    np.testing.assert_allclose(np.column_stack([out.column(f"proba_{j}") for j in range(4)]), expected)


class _Doubling:
    """Predicts 2x + 1 from one feature ``x``; can fail on a given call, like an interrupted run."""

    n_features_in_ = 1
    feature_names_in_ = np.array(["x"], dtype=object)

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.fail_on_call, self.calls = fail_on_call, 0

    def predict(self, X):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated interruption")
        return 2.0 * np.asarray(X, dtype=float)[:, 0] + 1.0

    def __getstate__(self):  # the simulated interruption is no part of the model a resume recognises
        return {}


def _mixed_folder(folder: Path) -> Path:
    """Two files whose columns hold different numeric types: int32 and int64 ids, int64 and double features."""
    folder.mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int32()), "x": pa.array([0, 1, 2], pa.int64())}),
                   folder / "a.parquet")
    pq.write_table(pa.table({"id": pa.array([4, 5, 6], pa.int64()), "x": pa.array([3.0, 4.0, 5.0])}),
                   folder / "b.parquet")
    return folder


@pytest.mark.parametrize("chunk_rows", [4, 3])
def test_a_folder_whose_files_differ_in_numeric_types_is_scored_whole(tmp_path: Path, chunk_rows: int) -> None:
    """A chunk spanning both files failed to combine, and with chunks on the file boundary the final merge failed:
    either way after every chunk was scored."""
    folder = _mixed_folder(tmp_path / "in")
    summary = predict_file(_Doubling(), folder, tmp_path / "out.parquet", chunk_rows=chunk_rows, keep=["id"])
    result = pq.read_table(tmp_path / "out.parquet")
    assert summary.rows == 6 and result.schema.field("id").type == pa.int64()
    assert result.to_pydict() == {"id": [1, 2, 3, 4, 5, 6], "prediction": [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]}


def test_a_resumed_run_over_files_of_different_types_writes_each_row_once(tmp_path: Path) -> None:
    folder = _mixed_folder(tmp_path / "in")
    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        predict_file(_Doubling(fail_on_call=2), folder, out, chunk_rows=3, keep=["id"])
    part = tmp_path / "out.parquet.parts" / "part-000000.parquet"
    table = pq.read_table(part)  # as a run before types were unified wrote it: the first file's int32 ids
    pq.write_table(table.set_column(0, "id", table.column("id").cast(pa.int32())), part)
    summary = predict_file(_Doubling(), folder, out, chunk_rows=3, keep=["id"])
    assert summary.resumed_chunks == 1 and summary.chunks == 2
    assert pq.read_table(out).to_pydict() == {"id": [1, 2, 3, 4, 5, 6], "prediction": [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]}


def test_a_kept_column_that_is_also_a_feature_or_kept_twice_is_copied_once(tmp_path: Path) -> None:
    """`--keep amount` of a model taking amount (or `--keep id --keep id`) read the column twice, which
    aborted with "the input files' columns ... have types that do not combine"."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(pd.DataFrame({"amount": [1.0, 2.0], "age": [10.0, 20.0]}), [1.0, 2.0])
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(2):
        pq.write_table(pa.table({"id": [2 * k, 2 * k + 1], "amount": [1.0, 2.0], "age": [10.0, 20.0]}),
                       folder / f"part-{k}.parquet")
    summary = predict_file(model, folder, tmp_path / "out.parquet", chunk_rows=3, keep=["id", "amount", "id"])
    result = pq.read_table(tmp_path / "out.parquet")
    assert summary.rows == 4 and result.column_names == ["id", "amount", "prediction"]
    assert result.column("id").to_pylist() == [0, 1, 2, 3] and result.column("amount").to_pylist() == [1.0, 2.0] * 2
    np.testing.assert_allclose(result.column("prediction").to_numpy(), [1.0, 2.0, 1.0, 2.0])
