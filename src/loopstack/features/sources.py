"""Where feature rows come from: files, in-memory tables, DuckDB SQL, and pushed streams.

Every source becomes one DuckDB relation (a SQL ``FROM`` expression), so the
offline store never copies data into an engine of its own: Parquet and CSV are
scanned in place, Arrow, pandas and polars tables are registered zero-copy.

A source also has a *fingerprint*, the content hash recorded with each
training set read from it: sha256 of the file bytes (cached per file size and
modification time), of a table's Arrow IPC stream, or of a query's text (a
query's result cannot be hashed without running it; the docs say so).

Examples
--------
>>> FileSource(path="data/driver_stats.parquet").spec()["kind"]
'file'
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from loopstack.core.errors import ValidationError

DEFAULT_TIMESTAMP = "event_timestamp"
_file_hashes: dict[tuple[str, int, int], str] = {}


class Relations(Protocol):
    """What a source needs from the engine to become SQL."""

    root: Path

    def register(self, data: Any) -> str:
        """Register an Arrow table and return the name to select from."""
        ...


@dataclass(eq=False, kw_only=True)
class Source:
    """Base of all sources: the timestamp columns every point-in-time join needs."""

    kind = "source"
    timestamp_field: str = DEFAULT_TIMESTAMP
    created_timestamp_field: str | None = None
    name: str = ""

    def parquet_file(self, root: Path) -> Path | None:
        """The one Parquet file this source reads, if it is one: its rows can then be fetched by number."""
        return None

    def sql(self, relations: Relations) -> str:
        raise NotImplementedError

    def fingerprint(self, root: Path) -> str:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "timestamp_field": self.timestamp_field,
                "created_timestamp_field": self.created_timestamp_field, **self._spec()}

    def _spec(self) -> dict[str, Any]:
        return {}


@dataclass(eq=False, kw_only=True)
class FileSource(Source):
    """Parquet or CSV: one file, a folder of them (read recursively), or a glob pattern.

    Relative paths are relative to the project root. A pattern (``data/2024-*.parquet``,
    ``exports/**/*.csv``) reads the files it matches when the data is read, in name order.
    The format is taken from the suffix, or ``file_format="parquet"|"csv"``. `encoding` is a
    CSV's text encoding: ``"utf-8"`` (the default), ``"utf-16"`` or ``"latin-1"``.
    """

    kind = "file"
    path: str
    file_format: str | None = None
    encoding: str | None = None

    def __post_init__(self) -> None:
        if self.encoding is not None:
            normal = _ENCODINGS.get(self.encoding.lower().replace("_", "-"))
            if normal is None:
                raise ValidationError(f"encoding={self.encoding!r} for {self.path}; CSV files are read as "
                                      f"{', '.join(sorted(set(_ENCODINGS.values())))}: convert the file to one")
            self.encoding = normal

    def resolve(self, root: Path) -> Path:
        path = Path(os.path.expanduser(self.path))
        return path if path.is_absolute() else root / path

    def is_pattern(self, root: Path) -> bool:
        """A glob pattern: wildcards in the path, and no file or folder of that literal name (``data[2024]``)."""
        return any(c in self.path for c in "*?[") and not self.resolve(root).exists()

    def format(self, root: Path) -> str:
        return self._pattern(root)[1] if self.is_pattern(root) else self._checked(self._format(root))

    def _checked(self, kind: str) -> str:
        if self.encoding is not None and kind != "csv":
            raise ValidationError(f"encoding={self.encoding!r} for {self.path}, which is read as {kind}; "
                                  "an encoding applies to CSV files only: drop it or set file_format='csv'")
        return kind

    def _format(self, root: Path, matched: list[Path] | None = None) -> str:
        """The format by `file_format`, the name, a pattern's `matched` files, or a folder's contents."""
        if self.file_format:
            if self.file_format not in ("parquet", "csv"):
                raise ValidationError(f"file_format={self.file_format!r} for {self.path}; use 'parquet' or 'csv'")
            return self.file_format
        path = self.resolve(root)
        if _is_csv(path):
            return "csv"
        if matched is not None:
            return "csv" if matched and all(_is_csv(f) for f in matched) else "parquet"
        if path.is_dir() and not any(path.rglob("*.parquet")) and any(_csv_files(path)):
            return "csv"
        return "parquet"

    def _pattern(self, root: Path) -> tuple[list[Path], str]:
        """A pattern's files and their format, from one glob (a ``**`` walk is what costs)."""
        matched = self._matches(self.resolve(root))
        kind = self._checked(self._format(root, matched))
        if not self.file_format:  # without it, only the files of the format the matches are read as
            matched = [f for f in matched if _is_csv(f) == (kind == "csv")]
        return matched, kind

    def sql(self, relations: Relations) -> str:
        path = self.resolve(relations.root)
        if self.is_pattern(relations.root):
            files, kind = self._pattern(relations.root)
            if not files:
                raise ValidationError(f"source pattern {path} matches no file; write the data there or fix "
                                      f"path={self.path!r}")
            target = "[" + ", ".join(_quoted(str(f)) for f in files) + "]"
        else:
            kind = self.format(relations.root)
            if not path.exists():
                raise ValidationError(f"source file {path} does not exist; write the data there or fix "
                                      f"path={self.path!r}")
            pattern = "*.[ct]sv" if kind == "csv" else "*.parquet"  # a .tsv is a CSV file too, alone or in a folder
            target = _quoted(str(path / "**" / pattern) if path.is_dir() else str(path))
        if kind == "csv":
            encoding = f", encoding={_quoted(self.encoding)}" if self.encoding else ""
            return f"read_csv({target}, auto_detect=true, union_by_name=true{encoding})"
        return f"read_parquet({target}, union_by_name=true)"

    def parquet_file(self, root: Path) -> Path | None:
        path = self.resolve(root)
        return path if path.is_file() and self.format(root) == "parquet" else None

    def files(self, root: Path) -> list[Path]:
        if self.is_pattern(root):
            return self._pattern(root)[0]
        path = self.resolve(root)
        if path.is_dir():
            found = _csv_files(path) if self.format(root) == "csv" else path.rglob("*.parquet")
            return sorted(p for p in found if p.is_file())
        return [path] if path.exists() else []

    def fingerprint(self, root: Path) -> str:
        digest = hashlib.sha256()
        path = self.resolve(root)
        base = _static_prefix(path) if self.is_pattern(root) else path
        for file in self.files(root):
            digest.update(str(file.relative_to(base) if base.is_dir() else file.name).encode())
            digest.update(_file_hash(file).encode())
        return digest.hexdigest()

    def _matches(self, pattern: Path) -> list[Path]:
        import glob

        return sorted(Path(f) for f in glob.glob(str(pattern), recursive=True) if os.path.isfile(f))

    def _spec(self) -> dict[str, Any]:
        # encoding only when set, so that definitions applied before it existed keep their spec
        return {"path": self.path, "file_format": self.file_format, **({"encoding": self.encoding} if self.encoding
                                                                         else {})}


_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-16": "utf-16", "utf16": "utf-16", "latin-1": "latin-1",
              "latin1": "latin-1", "iso-8859-1": "latin-1"}


def _is_csv(path: Path) -> bool:
    """A CSV or TSV file by its name, compressed (``.csv.gz``, which DuckDB reads) or not."""
    return path.name.lower().endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz"))


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _static_prefix(pattern: Path) -> Path:
    """The folder part of a glob pattern before its first wildcard: ``data/2024-*/x.parquet`` -> ``data``."""
    parts = []
    for part in pattern.parts:
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


@dataclass(eq=False, kw_only=True)
class TableSource(Source):
    """An in-memory table: Arrow, pandas or polars (positional `data` also works)."""

    kind = "table"
    data: Any = None
    _arrow: Any = field(default=None, init=False, repr=False)
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    def __init__(self, data: Any = None, **kwargs: Any) -> None:
        Source.__init__(self, **kwargs)
        if data is None:
            raise ValidationError("TableSource needs data=: an Arrow table, a pandas or a polars DataFrame")
        self.data = data
        self._arrow = None
        self._fingerprint = None

    def arrow(self) -> Any:
        if self._arrow is None:
            from loopstack.core.frames import to_arrow

            self._arrow = to_arrow(self.data)
        return self._arrow

    def sql(self, relations: Relations) -> str:
        return relations.register(self.arrow())

    def fingerprint(self, root: Path) -> str:
        if self._fingerprint is None:
            from loopstack.tracking.datasets import content_hash

            self._fingerprint = content_hash(self.arrow())
        return self._fingerprint

    def _spec(self) -> dict[str, Any]:
        return {"content": self.fingerprint(Path("."))}


@dataclass(eq=False, kw_only=True)
class SqlSource(Source):
    """A DuckDB SQL query; file paths in it are relative to the project root."""

    kind = "sql"
    query: str

    def sql(self, relations: Relations) -> str:
        """The query as a subquery; the closing parenthesis on its own line, so a trailing ``--`` comment
        cannot swallow it."""
        return f"({self.query.strip().rstrip(';')}\n)"

    def fingerprint(self, root: Path) -> str:
        return hashlib.sha256(self.query.encode()).hexdigest()

    def _spec(self) -> dict[str, Any]:
        return {"query": self.query}


@dataclass(eq=False, kw_only=True)
class PushSource(Source):
    """A stream of rows pushed with ``store.push(name, rows)``; history lives in `batch_source`.

    Offline retrieval and materialization read `batch_source`; pushed rows go
    to the online store, and with ``to="online_and_offline"`` are also appended
    to the batch source when it is a folder of Parquet files.
    """

    kind = "push"
    batch_source: Source

    def __post_init__(self) -> None:
        from loopstack.features.definitions import check_name

        check_name("push source", self.name)
        self.timestamp_field = self.batch_source.timestamp_field
        self.created_timestamp_field = self.batch_source.created_timestamp_field

    def sql(self, relations: Relations) -> str:
        return self.batch_source.sql(relations)

    def parquet_file(self, root: Path) -> Path | None:
        return self.batch_source.parquet_file(root)

    def fingerprint(self, root: Path) -> str:
        return self.batch_source.fingerprint(root)

    def _spec(self) -> dict[str, Any]:
        return {"batch_source": self.batch_source.spec()}


def _csv_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in (".csv", ".tsv")]


def _file_hash(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    cached = _file_hashes.get(key)
    if cached is None:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        cached = _file_hashes[key] = digest.hexdigest()
    return cached


__all__ = ["FileSource", "PushSource", "Source", "SqlSource", "TableSource"]
