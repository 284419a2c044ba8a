"""Paths a command writes, checked against the paths it reads."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from loopstack.core.errors import ConfigError


def refuse_overwrite(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], *, label: str,
                     read: str = "data", fix: str) -> None:
    """Raise ConfigError when `output` is one of `inputs` or lies inside one (a later scan would read it).

    `label` names the output in the message (``--output``, ``report path``), `read` what the
    inputs are, `fix` what to do instead.

    Examples
    --------
    >>> refuse_overwrite("out.parquet", ["in.parquet"], label="output", fix="write elsewhere")
    >>> try:
    ...     refuse_overwrite("in.parquet", ["in.parquet"], label="output", fix="write elsewhere")
    ... except ConfigError as error:
    ...     print(str(error).split(" or ")[0])
    output 'in.parquet' would overwrite the data 'in.parquet'
    """
    target = Path(output).resolve()
    for data in inputs:
        source = Path(data).resolve()
        if target == source or source in target.parents:
            raise ConfigError(f"{label} {os.fspath(output)!r} would overwrite the {read} {os.fspath(data)!r} or land "
                              f"inside it; {fix}")




def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make a rename into `folder` durable: without it, a power loss can lose the name just written.

    POSIX only; elsewhere (Windows) a folder cannot be opened, and the rename is left to the OS.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a filesystem that cannot sync folders
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any],
                 temporary: str | os.PathLike[str] | None = None) -> None:
    """Call ``write(file)`` on a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.

    The file is there whole or not at all, after a kill or a power cut too: without the syncs a renamed
    file can come back empty. The temporary is `temporary`, else a unique ``.<name>.<random>.tmp``; a
    failed write leaves none behind.
    """
    path = Path(path)
    if temporary is None:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        handle, partial = os.fdopen(fd, "wb"), Path(name)
    else:
        partial = Path(temporary)
        handle = open(partial, "wb")  # noqa: SIM115 - closed below, before the rename
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_parquet_durably(table: Any, path: str | os.PathLike[str], temporary: str | os.PathLike[str] | None = None,
                          **options: Any) -> None:
    """`atomic_write` of the Arrow `table` as Parquet (`options` go to ``pyarrow.parquet.write_table``), under
    `temporary`, by default ``.<name>.tmp``, which a ``*.parquet`` listing skips: one empty segment after a power
    cut broke every read of a log folder."""
    import pyarrow.parquet as pq

    path = Path(path)
    atomic_write(path, lambda handle: pq.write_table(table, handle, **options),
                 temporary if temporary is not None else path.with_name(f".{path.name}.tmp"))


__all__ = ["atomic_write", "fsync_folder", "refuse_overwrite", "write_parquet_durably"]
