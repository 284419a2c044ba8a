"""The prediction log: a batch it cannot store costs only its own rows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from loopstack.serving import ModelSpec, read_feedback, read_prediction_log
from loopstack.serving.batcher import Batch, Item
from loopstack.serving.models import adapt
from loopstack.serving.predlog import PredictionLog


class StrModel:
    signature: ClassVar[dict[str, Any]] = {"inputs": {"columns": {"a": "float64", "s": "str"}}}

    def predict(self, X):  # pragma: no cover - the log is fed batches directly
        return np.zeros(len(X["a"]))


def _batch(adapter, request_id: str, value: object) -> Batch:
    rows = {"a": np.array([1.0]), "s": np.array([value], dtype=object)}
    return Batch(adapter, [Item(rows, 1, None, 0.0, request_id, None)], rows, np.zeros(1))  # type: ignore[arg-type]


def test_a_batch_that_cannot_be_converted_drops_only_its_own_rows(tmp_path: Path, caplog) -> None:
    """Before, one unconvertible batch dropped every batch of its model version in the flush window."""
    adapter = adapt(StrModel(), ModelSpec(name="s", model=StrModel()))
    log = PredictionLog(tmp_path, flush_s=3600)
    for request_id, value in [("r0", "u"), ("r1", "v"), ("bad", {"k": 1}), ("r3", "w")]:
        log.observe(_batch(adapter, request_id, value))
    with caplog.at_level(logging.WARNING, logger="loopstack.serving"):
        log.close()
    table = read_prediction_log(tmp_path, "s")
    assert table.column("request_id").to_pylist() == ["r0", "r1", "r3"]
    assert table.column("inputs").to_pylist() == [{"a": 1.0, "s": "u"}, {"a": 1.0, "s": "v"}, {"a": 1.0, "s": "w"}]
    assert log.rows_written == 3
    assert any("'bad'" in record.getMessage() and "dropped" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("value", [{"k": 1}])
def test_a_flush_of_only_bad_batches_writes_nothing_and_keeps_logging(tmp_path: Path, value: object) -> None:
    adapter = adapt(StrModel(), ModelSpec(name="s", model=StrModel()))
    log = PredictionLog(tmp_path, flush_s=3600)
    log.observe(_batch(adapter, "bad", value))
    log.flush()
    log.observe(_batch(adapter, "good", "u"))
    log.close()
    assert read_prediction_log(tmp_path, "s").column("request_id").to_pylist() == ["good"]


def test_a_request_answered_504_is_not_logged_as_a_prediction() -> None:
    """The model finished the batch after the reaper had answered its requests 504; the log recorded them
    as predictions clients never got."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from tests.serving.conftest import SlowModel

    from loopstack.serving.batcher import Batcher
    from loopstack.serving.predlog import predictions_table

    slow = SlowModel(delay_s=0.3)
    spec = ModelSpec(name="slow", model=slow, timeout_s=0.1, max_wait_ms=0)
    batches: list[Batch] = []

    async def main() -> list[Any]:
        batcher = Batcher(adapt(slow, spec), spec, ThreadPoolExecutor(1), observers=[batches.append])
        late = await asyncio.gather(batcher.submit(np.array([[1.0, 2.0, 3.0]]), "late"), return_exceptions=True)
        slow.delay_s = 0.0
        while not batches:  # the model finishes the late request's batch after its 504
            await asyncio.sleep(0.02)
        on_time = await batcher.submit(np.array([[1.0, 1.0, 1.0]]), "on-time")
        await batcher.drain()
        return [*late, on_time]

    late, on_time = asyncio.run(main())
    assert isinstance(late, TimeoutError) and float(on_time[0]) == 3.0
    table = predictions_table(batches)
    assert table.column("request_id").to_pylist() == ["on-time"]
    assert [b.timed_out for b in batches] == [(0,), ()]


def test_two_variants_of_one_version_number_keep_their_own_field_names(tmp_path: Path) -> None:
    """Batches were grouped by (name, version), which an endpoint's variants (fraud/1 and fraud-xgb/1) share:
    they were written as one table named from the first variant's fields, so the second's values were logged
    under the wrong names (its age as amount, its days as age)."""
    from loopstack.serving.inputs import InputSchema
    from loopstack.serving.models import ModelAdapter

    control = ModelAdapter("api", "1", InputSchema.numeric(["amount", "age"]), "predict", None, "control")
    treatment = ModelAdapter("api", "1", InputSchema.numeric(["age", "days"]), "predict", None, "treatment")
    log = PredictionLog(tmp_path, flush_s=3600)
    for adapter, request_id, rows in [(control, "a", np.array([[100.0, 30.0]])),
                                      (treatment, "b", np.array([[30.0, 7.0]])),
                                      (control, "c", np.array([[200.0, 40.0]]))]:
        item = Item(rows, 1, None, 0.0, request_id, adapter.variant)  # type: ignore[arg-type]
        log.observe(Batch(adapter, [item], rows, np.zeros(1)))
    log.close()
    logged = {r["request_id"]: (r["variant"], r["inputs"]) for r in read_prediction_log(tmp_path, "api").to_pylist()}
    assert logged == {
        "a": ("control", {"amount": 100.0, "age": 30.0, "days": None}),
        "b": ("treatment", {"amount": None, "age": 30.0, "days": 7.0}),
        "c": ("control", {"amount": 200.0, "age": 40.0, "days": None}),
    }


def test_only_string_columns_other_than_the_request_id_are_dictionary_encoded(tmp_path: Path) -> None:
    """A dictionary tried on every column (Parquet's default) tripled the writer's CPU on ids and floats."""
    import pyarrow.parquet as pq

    adapter = adapt(StrModel(), ModelSpec(name="s", model=StrModel()))
    log = PredictionLog(tmp_path, flush_s=3600)
    for i in range(50):
        log.observe(_batch(adapter, f"r{i}", "city"))
    log.close()
    (segment,) = (tmp_path / "predictions").glob("**/*.parquet")
    metadata = pq.ParquetFile(segment).metadata.row_group(0)
    encoded = {metadata.column(i).path_in_schema: "RLE_DICTIONARY" in metadata.column(i).encodings
               for i in range(metadata.num_columns)}
    assert {name for name, dictionary in encoded.items() if dictionary} == {"model", "version", "variant", "inputs.s"}
    assert read_prediction_log(tmp_path, "s").column("inputs").to_pylist()[0] == {"a": 1.0, "s": "city"}


def test_reading_a_model_the_log_does_not_hold_names_the_models_it_holds(tmp_path: Path) -> None:
    """A misspelt model said "no predictions ... yet; they are written about a second after serving"."""
    from loopstack.core.errors import ValidationError

    with pytest.raises(ValidationError, match=r"no predictions .*yet"):  # nothing served yet: worth waiting for
        read_prediction_log(tmp_path, "s")
    adapter = adapt(StrModel(), ModelSpec(name="s", model=StrModel()))
    log = PredictionLog(tmp_path, flush_s=3600)
    log.observe(_batch(adapter, "r0", "u"))
    log.close()
    with pytest.raises(ValidationError, match=r"^no predictions under .*: the log holds no model 'z'; "
                                              r"it holds \['s'\]"):
        read_prediction_log(tmp_path, "z")
    assert read_prediction_log(tmp_path, "s").num_rows == 1


def test_an_empty_segment_left_by_a_power_cut_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    """One zero-byte segment made every read of the log fail, and with it drift, shadow and rollout readers."""
    adapter = adapt(StrModel(), ModelSpec(name="s", model=StrModel()))
    log = PredictionLog(tmp_path, flush_s=3600)
    log.observe(_batch(adapter, "r0", "u"))
    log.feedback([{"request_id": "r0", "label": 1}])
    log.close()
    (tmp_path / "predictions" / "s" / "1" / "0-torn.parquet").write_bytes(b"")
    (tmp_path / "feedback" / "0-torn.parquet").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="loopstack.serving"):
        assert read_prediction_log(tmp_path, "s").column("request_id").to_pylist() == ["r0"]
        assert read_feedback(tmp_path).column("request_id").to_pylist() == ["r0"]
    assert sum("0-torn.parquet" in record.getMessage() for record in caplog.records) == 2


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through Linux's /proc")
def test_a_segment_reaches_the_disk_before_its_name_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    adapter = adapt(StrModel(), ModelSpec(name="s", model=StrModel()))
    log = PredictionLog(tmp_path, flush_s=3600)
    log.observe(_batch(adapter, "r0", "u"))
    log.close()
    assert any(path.endswith(".parquet.tmp") for path in synced)  # the file, under its temporary name
    assert str(tmp_path / "predictions" / "s" / "1") in synced  # then the folder holding the new name
