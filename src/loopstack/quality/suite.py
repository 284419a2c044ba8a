"""A suite: a named list of expectations, written in Python or YAML, run over any input.

YAML form (what `Suite.to_yaml` writes and `Suite.load` reads)::

    name: orders
    expectations:
      - {kind: not_null, column: order_id}
      - {kind: between, column: amount, min: 0, max: 10000}
      - {kind: in_set, column: status, values: [new, paid, shipped]}
      - {kind: unique, column: order_id, severity: warning}
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConfigError
from loopstack.quality.expectations.base import Expectation
from loopstack.quality.results import SuiteResult

if TYPE_CHECKING:
    from loopstack.core.project import Project


class Suite:
    """A named list of expectations.

    Parameters
    ----------
    name : str
        Names the suite in results, events and `history`.
    expectations : iterable of Expectation
        The checks; results keep this order (row checks share the scans of their columns).
    description : str, optional
        Free text kept with the suite.

    Examples
    --------
    >>> from loopstack.quality import Between, NotNull, Suite, Unique
    >>> suite = Suite("users", [NotNull("id"), Unique("id"), Between("age", min=0, max=120)])
    >>> result = suite.run({"id": [1, 2, 2], "age": [30, 200, 41]})
    >>> result.passed, [r.label for r in result.failures]
    (False, ['unique(id)', 'between(age)'])
    >>> result["between(age)"].sample
    [{'id': 2, 'age': 200}]
    >>> Suite.from_yaml(suite.to_yaml()).to_dict() == suite.to_dict()
    True
    """

    def __init__(self, name: str, expectations: Iterable[Expectation] = (), description: str = "") -> None:
        if not name or not isinstance(name, str):
            raise ConfigError(f"a suite needs a name, got {name!r}")
        self.name = name
        self.description = description
        self.expectations: list[Expectation] = []
        for expectation in expectations:
            self.add(expectation)

    def add(self, expectation: Expectation) -> Suite:
        """Append an expectation; returns the suite so calls chain."""
        if not isinstance(expectation, Expectation):
            raise ConfigError(
                f"suite {self.name!r}: {expectation!r} is not an expectation; use loopstack.quality.NotNull(...), ..."
            )
        self.expectations.append(expectation)
        return self

    def __iter__(self) -> Iterator[Expectation]:
        return iter(self.expectations)

    def __len__(self) -> int:
        return len(self.expectations)

    def __repr__(self) -> str:
        return f"Suite({self.name!r}, {len(self)} expectations)"

    # -- running ------------------------------------------------------------------
    def run(
        self,
        data: Any,
        project: Project | None = None,
        sample_size: int = 5,
        sample_columns: list[str] | str | None = None,
    ) -> SuiteResult:
        """Check `data` and return the results; with `project`, also record them as an event.

        `data` is an Arrow table, a pandas or polars DataFrame, a dict of
        columns, a Parquet/CSV path, glob or folder (streamed, not loaded),
        or a `Query`. `sample_size` offending rows are kept per failed check:
        whole rows for in-memory data; for files and queries the checked
        columns plus `sample_columns` (e.g. a key), or whole rows with ``"*"``.
        """
        from loopstack.quality.engine import evaluate
        from loopstack.quality.source import open_source

        started = time.time()
        clock = time.perf_counter()
        with open_source(data) as source:
            source.sample_columns = sample_columns
            results, row_count = evaluate(self.expectations, source, sample_size)
            description = source.description
        result = SuiteResult(self.name, results, row_count, description, started, time.perf_counter() - clock)
        if project is not None:
            from loopstack.quality.store import record

            record(project, result)
        return result

    # -- serialization ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["expectations"] = [e.to_dict() for e in self.expectations]
        return out

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Suite:
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"a suite spec needs 'name' and 'expectations', got {str(spec)[:100]!r}")
        items = spec.get("expectations") or []
        if not isinstance(items, list):
            raise ConfigError(f"suite {spec['name']!r}: 'expectations' must be a list of {{kind: ..., ...}}")
        return cls(spec["name"], [Expectation.from_dict(item) for item in items], spec.get("description", ""))

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The suite as YAML text; also written to `path` when given.

        Expectations that hold in-memory data (a frame as a foreign-key
        reference) cannot be written; give them a path or a `Query` instead.
        """
        import yaml

        spec = self.to_dict()
        _check_plain(spec, self.name)
        text = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_yaml(cls, text: str) -> Suite:
        """A suite from YAML text."""
        import yaml

        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"suite YAML does not parse: {error}") from error
        return cls.from_dict(spec)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Suite:
        """A suite from a YAML file."""
        target = Path(path)
        if not target.is_file():
            raise ConfigError(f"suite file {str(target)!r} does not exist; write one with Suite.to_yaml(path)")
        try:
            text = target.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"suite file {str(target)!r} is not text; pass the suite's YAML file") from error
        return cls.from_yaml(text)


def _check_plain(value: Any, suite: str, where: str = "") -> None:
    """Refuse values YAML cannot hold, naming where they are."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, suite, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, suite, f"{where}[{index}]")
    elif value is not None and not isinstance(value, str | int | float | bool | datetime.date):
        raise ConfigError(
            f"suite {suite!r}: {where} holds a {type(value).__name__}, which YAML cannot store; "
            "pass a file path or SQL text instead"
        )
