"""A model version's reference data: the training set tracking recorded for it.

The registry links a model version to the run that produced it; tracking
links that run to the data sets it read (`run_inputs` -> `datasets`, with a
content digest, row count and the source it was read from). The data itself
is not copied into the project, so loading it takes a `loader`: a function
from that `datasets` row to a table. The default loader re-reads the recorded
source (a Parquet/CSV path) and checks that it still has the recorded row count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loopstack.core.errors import IntegrityError, NotFoundError, ValidationError
from loopstack.drift.data import as_table

Loader = Callable[[dict[str, Any]], Any]


def training_datasets(project: Any, model: str, version: int | str | None = None) -> list[dict[str, Any]]:
    """The `datasets` rows of the run behind `model` at `version` (a number, an alias, or None for the latest).

    Training inputs come first; other contexts (evaluation, ...) follow.
    """
    from sqlalchemy import select

    number = resolve_version(project, model, version)
    versions, inputs, datasets = (project.db.table(n) for n in ("model_versions", "run_inputs", "datasets"))
    with project.db.read() as connection:
        run_id = connection.execute(
            select(versions.c.run_id).where(versions.c.name == model, versions.c.version == number)
        ).scalar()
        if run_id is None:
            raise NotFoundError(f"model {model!r} version {number} has no run; register it from a tracked run")
        rows = connection.execute(
            select(datasets, inputs.c.context)
            .join(inputs, inputs.c.dataset_digest == datasets.c.digest)
            .where(inputs.c.run_id == run_id)
        ).mappings().all()
    if not rows:
        raise NotFoundError(
            f"run {run_id} of model {model!r} version {number} logged no data set; call log_input() while training"
        )
    return sorted((dict(row) for row in rows), key=lambda row: row["context"] != "training")


def resolve_version(project: Any, model: str, version: int | str | None) -> int:
    """A version number from a number, a digit string, an alias, or None (the latest)."""
    from sqlalchemy import func, select

    if isinstance(version, int) or (isinstance(version, str) and version.isdigit()):
        return int(version)
    with project.db.read() as connection:
        if version is None:
            versions = project.db.table("model_versions")
            number = connection.execute(select(func.max(versions.c.version)).where(versions.c.name == model)).scalar()
        else:
            aliases = project.db.table("model_aliases")
            number = connection.execute(
                select(aliases.c.version).where(aliases.c.name == model, aliases.c.alias == version)
            ).scalar()
    if number is None:
        what = f"alias {version!r}" if version else "any version"
        raise NotFoundError(f"model {model!r} has no {what}; register a version or set the alias first")
    return int(number)


def read_recorded_source(row: dict[str, Any]) -> Any:
    """The default loader: re-read the data set from its recorded source path."""
    try:
        table = as_table(row["source"])
    except ValidationError as error:
        raise NotFoundError(
            f"the reference data set {row['name']!r} was read from {row['source']!r}, which cannot be read now "
            f"({error}); pass loader= to load it from where it lives"
        ) from error
    if table.num_rows != row["num_rows"]:
        raise IntegrityError(
            f"{row['source']} has {table.num_rows} rows but the run recorded {row['num_rows']} "
            f"(digest {row['digest'][:12]}); the file changed since training, pass loader= for the original"
        )
    return table


def load_reference(project: Any, model: str, version: int | str | None = None, loader: Loader | None = None) -> Any:
    """The training data of a model version as an Arrow table, through `loader` (default: re-read the source)."""
    row = training_datasets(project, model, version)[0]
    return as_table((loader or read_recorded_source)(row))
