"""File-to-file batch inference in bounded memory, resumable after an interruption.

The input (a Parquet file or folder) is streamed as Arrow record batches and
re-cut into chunks of exactly ``chunk_rows`` rows, so chunk *i* always covers
the same rows however the file's row groups fall. Each scored chunk is
written as its own Parquet part (to a temporary name, then renamed) in
``<output>.parts/`` next to a manifest naming the input files, their sizes
and times, the model and the chunk size. A rerun with the same manifest skips
the finished parts (a model object without a registry digest is named by a
hash of its pickle, so another model of the same class never resumes its
chunks); at the end the parts are streamed into the output file
and the folder is removed. Memory holds about one chunk at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.core.paths import write_parquet_durably
from loopstack.serving.config import ModelSpec
from loopstack.serving.models import ModelAdapter, adapt, by_row

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class BatchSummary:
    """What `predict_file` did."""

    rows: int
    chunks: int
    resumed_chunks: int
    output: Path


def predict_file(
    model: Any,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    chunk_rows: int = 65_536,
    keep: Sequence[str] = (),
    method: str = "auto",
    resume: bool = True,
    progress: bool = False,
) -> BatchSummary:
    """Score every row of `input` with `model` and write the predictions to `output` (Parquet).

    Parameters
    ----------
    model : object
        A registry `LoadedModel` or any model with ``predict``/``predict_proba``.
    input, output : path
        Parquet file or folder in; Parquet file out.
    chunk_rows : int
        Rows per predict call and per checkpoint.
    keep : sequence of str
        Input columns copied to the output (ids, timestamps).
    method : {"auto", "predict", "predict_proba"}
        ``auto`` uses predict_proba when the model has it.
    resume : bool
        Skip chunks finished by an earlier, interrupted run with the same input, model and chunk size.
    progress : bool
        Show a progress bar.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, pyarrow as pa, pyarrow.parquet as pq
    >>> from sklearn.linear_model import LinearRegression
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> pq.write_table(pa.table({"id": [1, 2, 3], "x": [0.0, 1.0, 2.0]}), folder / "in.parquet")
    >>> model = LinearRegression().fit(np.array([[0.0], [1.0]]), [1.0, 3.0])
    >>> summary = predict_file(model, folder / "in.parquet", folder / "out.parquet", chunk_rows=2, keep=["id"])
    >>> [round(p, 6) for p in pq.read_table(folder / "out.parquet").to_pydict()["prediction"]]
    [1.0, 3.0, 5.0]
    """
    if chunk_rows <= 0:
        raise ConfigError(f"chunk_rows={chunk_rows!r} must be positive")
    _check_kept_names(keep)
    keep = list(dict.fromkeys(keep))  # `--keep id --keep id` copies id once
    output = Path(output)
    _check_output(Path(input), output)
    adapter = adapt(model, ModelSpec(name="batch", model=model, method=method))
    dataset = _dataset(Path(input))
    features = _feature_columns(adapter, dataset.schema.names, keep)
    _check_files(dataset.files, adapter, features, keep)
    total = dataset.count_rows()
    if total == 0:
        raise ValidationError(f"the input {str(input)!r} has no rows; nothing was written to {str(output)!r}")
    parts = output.with_name(output.name + ".parts")
    manifest = _manifest(dataset, adapter, chunk_rows, features, keep)
    done = _finished_parts(parts, manifest) if resume and manifest["model"] is not None else 0
    if resume and manifest["model"] is None and (parts / "manifest.json").exists():
        warnings.warn(f"the model ({type(adapter.model).__name__}) cannot be pickled, so it cannot be told apart "
                      f"from the model that wrote the checkpoint {str(parts)!r}: its chunks are discarded and scoring "
                      "starts over; make the model picklable (or load it from the registry) to resume", stacklevel=2)
    if done == 0:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
        (parts / "manifest.json").write_text(json.dumps(manifest))
    schema = _unified_schema(dataset.files, _read_columns(features, keep))
    chunks = _chunks(_batches(dataset.files, schema, chunk_rows), chunk_rows)
    with _progress(progress, total) as advance:
        index = 0
        for index, chunk in enumerate(chunks):
            if index >= done:
                write_parquet_durably(_score(adapter, chunk, features, keep), parts / f"part-{index:06d}.parquet")
            advance(chunk.num_rows)
        count = index + 1
    _merge(parts, count, output)
    shutil.rmtree(parts)
    return BatchSummary(total, count, min(done, count), output)


def _check_kept_names(keep: Sequence[str]) -> None:
    """Refuse a kept column named like an output column: the prediction would silently replace it."""
    clashes = [k for k in keep if re.fullmatch(r"prediction|(prediction|proba)_\d+", k)]
    if clashes:
        raise ValidationError(f"--keep {clashes} would be overwritten by the model's output columns (prediction, "
                              "prediction_N, proba_N); rename the input column first")


def _check_output(input: Path, output: Path) -> None:
    """Refuse an output that would replace the input, land inside it (a rerun would read it) or is a folder."""
    from loopstack.core.paths import refuse_overwrite

    refuse_overwrite(output, [input], label="output", read="input", fix="write the predictions to another path")
    if output.is_dir():
        raise ConfigError(f"output {str(output)!r} is a folder; give a Parquet file to write, "
                          f"e.g. {str(output / 'predictions.parquet')!r}")


def _dataset(input: Path) -> Any:
    """The input as a Parquet dataset, or an error naming the path when it is not Parquet."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(os.fspath(input), format="parquet")
    except pa.ArrowInvalid as error:
        raise ValidationError(
            f"input {str(input)!r} is not a Parquet file (or it is damaged); pass a Parquet file or a folder of "
            "them, e.g. convert a CSV with pandas.read_csv(path).to_parquet(new_path)"
        ) from error
    if not dataset.files:
        raise ValidationError(f"input folder {str(input)!r} holds no Parquet files; pass a Parquet file or a folder "
                              "of *.parquet files")
    return dataset


def _feature_columns(adapter: ModelAdapter, available: list[str], keep: Sequence[str]) -> list[str]:
    missing = [k for k in keep if k not in available]
    if missing:
        raise ValidationError(f"--keep column(s) {missing} are not in the input; it has {available}")
    names = adapter.schema.names
    # An unnamed model's fields are x0, x1, ... as the server names them: an input that uses those names is
    # matched by name, as the server does, not by position (columns in another order scored silently wrong).
    if adapter.schema.named or any(n in available for n in names):
        absent = [n for n in names if n not in available]
        if absent:
            raise ValidationError(f"the input lacks model field(s) {absent}; it has {available}")
        return names
    features = [c for c in available if c not in keep]
    if len(features) != len(adapter.schema):
        raise ValidationError(
            f"the model takes {len(adapter.schema)} unnamed features but the input has {len(features)} "
            f"columns besides --keep: {features}; drop or --keep the extra columns"
        )
    return features


def _read_columns(features: list[str], keep: Sequence[str]) -> list[str]:
    """The input columns to read, each once: a kept column may also be a feature (--keep amount), and a schema
    with a name twice failed to unify with a misleading "types that do not combine"."""
    return list(dict.fromkeys([*features, *keep]))


def _check_files(files: list[str], adapter: ModelAdapter, features: list[str], keep: Sequence[str]) -> None:
    """Every file has the columns, and numbers where the model takes numbers: checked from the footers before
    any chunk is scored, not found by the model (or pyarrow) hours into a run, in a later file of a folder."""
    import pyarrow.parquet as pq

    fields = dict(zip(features, adapter.schema.columns, strict=True))
    for path in files:
        schema = pq.read_schema(path)
        absent = [c for c in _read_columns(features, keep) if c not in schema.names]
        if absent:
            raise ValidationError(f"input file {path!r} lacks column(s) {absent}; it has {schema.names}")
        for name, column in fields.items():
            kind = schema.field(name).type
            if column.numeric and not _arrow_numeric(kind):
                raise ValidationError(f"input file {path!r} column {name!r} holds {kind}; the model takes numbers "
                                      f"({column.dtype}) there: cast or encode it before scoring")


def _arrow_numeric(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
                or pa.types.is_decimal(kind) or pa.types.is_null(kind))


def _score(adapter: ModelAdapter, chunk: pa.RecordBatch, features: list[str], keep: Sequence[str]) -> pa.Table:
    import pyarrow as pa

    if adapter.schema.named:
        data: Any = chunk.select(features).to_pandas()
    else:
        data = np.column_stack([chunk.column(f).to_numpy(zero_copy_only=False) for f in features])
    outputs = by_row(getattr(adapter.model, adapter.method)(data), chunk.num_rows)  # a list per output: rows first
    if outputs.shape[0] != chunk.num_rows:
        raise ValidationError(f"the model returned {outputs.shape[0]} outputs for {chunk.num_rows} rows")
    columns = {k: chunk.column(k) for k in keep}
    if outputs.ndim == 1:
        columns["prediction"] = pa.array(outputs)
    else:
        prefix = "proba" if adapter.method == "predict_proba" else "prediction"
        flat = outputs.reshape(outputs.shape[0], -1)
        columns.update({f"{prefix}_{j}": pa.array(flat[:, j]) for j in range(flat.shape[1])})
    return pa.table(columns)


def _unified_schema(files: list[str], columns: list[str]) -> pa.Schema:
    """One schema for `columns` across the input files: a folder may hold int64 in one file and double in the
    next, where a chunk spanning both, and the output file, need one type per column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = []
    for path in files:
        schema = pq.read_schema(path)
        schemas.append(pa.schema([schema.field(c).remove_metadata() for c in columns]))
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ValidationError(f"the input files' columns {columns} have types that do not combine ({error}); "
                              "cast them to one type in every file") from None


def _batches(files: list[str], schema: pa.Schema, size: int) -> Iterator[pa.RecordBatch]:
    """Record batches file by file, one row group at a time, cast to `schema`.

    Both a dataset scanner and ``ParquetFile.iter_batches`` were measured holding the whole
    file in memory; reading row group by row group keeps one row group resident.
    """
    import pyarrow.parquet as pq

    for path in files:
        with pq.ParquetFile(path) as handle:
            for group in range(handle.num_row_groups):
                table = handle.read_row_group(group, columns=schema.names, use_threads=False)
                yield from table.select(schema.names).cast(schema).to_batches(size)


def _chunks(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut record batches into batches of exactly `size` rows (the last may be shorter)."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - rows, batch.num_rows)
            pending.append(batch.slice(0, take))
            rows += take
            batch = batch.slice(take)
            if rows == size:
                yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
                pending, rows = [], 0
    if rows:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _manifest(dataset: Any, adapter: ModelAdapter, chunk_rows: int, features: list[str],
              keep: Sequence[str]) -> dict[str, Any]:
    files = [{"path": f, "size": os.path.getsize(f), "mtime_ns": os.stat(f).st_mtime_ns} for f in dataset.files]
    return {"files": files, "model": _model_identity(adapter.model), "version": adapter.version,
            "method": adapter.method, "chunk_rows": chunk_rows, "features": features, "keep": list(keep)}


def _model_identity(model: Any) -> str | None:
    """The model's registry digest, else a sha256 of its pickle (streamed, one pass per job): its class name alone
    let a retrained model of the same class resume chunks another model scored. None when it cannot be pickled:
    nothing then proves it is the checkpoint's model, and the run starts over."""
    digest = getattr(model, "digest", None)
    if digest:
        return str(digest)
    sha = hashlib.sha256()

    class _Hashing:
        write = staticmethod(sha.update)

    try:
        pickle.Pickler(_Hashing(), protocol=5).dump(model)
    except Exception:  # any failure of a model's __reduce__/__getstate__ means the same: not identifiable
        return None
    return f"{type(model).__qualname__}:sha256:{sha.hexdigest()}"


def _finished_parts(parts: Path, manifest: dict[str, Any]) -> int:
    """How many leading chunks an earlier run with the same manifest finished. A part that cannot be read
    (empty or cut short by a power cut) ends the count: it and the chunks after it are scored again."""
    try:
        if json.loads((parts / "manifest.json").read_text()) != manifest:
            return 0
    except (OSError, ValueError):
        return 0
    done = 0
    while _readable_part(parts / f"part-{done:06d}.parquet", manifest["chunk_rows"]):
        done += 1
    return done


def _readable_part(path: Path, chunk_rows: int) -> bool:
    """The part exists and its footer reads (it is written last), with at most `chunk_rows` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return 0 < pq.read_metadata(path).num_rows <= chunk_rows
    except (OSError, pa.ArrowException):
        return False


def _merge(parts: Path, count: int, output: Path) -> None:
    """Stream the parts into `output`, in one schema: parts an earlier run wrote (before its input's types were
    unified) may differ, e.g. int32 ids in one and int64 in the next."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [parts / f"part-{index:06d}.parquet" for index in range(count)]
    schema = pa.unify_schemas([pq.read_schema(p).remove_metadata() for p in paths], promote_options="permissive")
    tmp = output.with_name(f".{output.name}.tmp")
    writer = None
    try:
        for path in paths:
            table = pq.read_table(path).cast(schema)
            writer = writer or pq.ParquetWriter(tmp, schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValidationError(f"the input has no rows; nothing was written to {output}")
    tmp.replace(output)


class _progress:
    """A rich progress bar, or nothing, as a context manager yielding ``advance(rows)``."""

    def __init__(self, show: bool, total: int) -> None:
        self.show, self.total = show, total
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.show:
            return lambda rows: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress("predict", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False)
        self.bar.start()
        task = self.bar.add_task("rows", total=self.total, completed=0)
        return lambda rows: self.bar.advance(task, rows)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
