"""Lazy re-exports for package `__init__` modules (PEP 562).

A package lists ``name -> module`` and its names load on first access, so
importing the package costs nothing until a name is used.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str], public: list[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` that import `exports` on first use.

    `exports` maps each name to the module that defines it, absolute or
    relative to `package` (a leading dot); a name that is the module's own
    last component (``"stats": "pkg.stats"``) exports the module itself.

    Examples
    --------
    >>> getattr_, dir_ = lazy_exports("json", {"dumps": "json"}, ["dumps"])
    >>> getattr_("dumps")({"a": 1})
    '{"a": 1}'
    """
    namespace = sys.modules[package].__dict__ if package in sys.modules else {}

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = package + module if module.startswith(".") else module
        loaded = import_module(target)
        value = loaded if target.endswith("." + name) else getattr(loaded, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return list(public)

    return __getattr__, __dir__
