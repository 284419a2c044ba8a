"""Online stores: one module per backend, chosen by the URL scheme of ``online_store``.

Examples
--------
>>> import tempfile, pathlib
>>> store = open_online_store("sqlite:///online.db", pathlib.Path(tempfile.mkdtemp()))
>>> type(store).__name__
'SqliteOnlineStore'
>>> store.close()
"""

from __future__ import annotations

from pathlib import Path

from loopstack.core.errors import ConfigError
from loopstack.features.online.base import OnlineStore, Record

BACKENDS = {
    "sqlite": "loopstack.features.online.sqlite:SqliteOnlineStore",
    "redis": "loopstack.features.online.redis:RedisOnlineStore",
    "rediss": "loopstack.features.online.redis:RedisOnlineStore",
}


def open_online_store(url: str, root: Path, prefix: str = "loopstack:") -> OnlineStore:
    """The backend for `url` (``sqlite:///path`` relative to `root`, or ``redis://host:port/db``)."""
    from importlib import import_module

    scheme = url.split("://", 1)[0] if "://" in url else ""
    target = BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(
            f"online_store {url!r} has an unknown scheme; use sqlite:///.loopstack/online.db "
            f"or redis://127.0.0.1:6379/0 (known: {sorted(BACKENDS)})"
        )
    module, name = target.split(":")
    backend: OnlineStore = getattr(import_module(module), name)(url, root=root, prefix=prefix)
    return backend


__all__ = ["BACKENDS", "OnlineStore", "Record", "open_online_store"]
