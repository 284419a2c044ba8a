"""Paths a command writes, checked against the paths it reads."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

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


__all__ = ["refuse_overwrite"]


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
