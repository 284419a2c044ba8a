"""The Redis online store: one string per (view, entity key), read with one MGET per request.

A request for any number of entities and features across views is a single
round trip (``MGET`` over every key), never one per feature. Values are
``"<event_ts>:<created_ts>:<json>"``; writes go through a Lua script that keeps
a stored record newer than the incoming one, so replays and resumed
materializations never move a value back in time. Keys carry a prefix (URL
query ``?prefix=``, default ``loopstack:<project>:``) so projects and tests can
share one server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from loopstack.core.errors import BackendUnavailableError, ConfigError
from loopstack.features.online.base import Record

WRITE_SCRIPT = """
for i, key in ipairs(KEYS) do
  local new = ARGV[i]
  local current = redis.call('GET', key)
  local write = true
  if current then
    local cts, ccr = string.match(current, '^(%-?%d+):(%-?%d+):')
    local nts, ncr = string.match(new, '^(%-?%d+):(%-?%d+):')
    cts, ccr, nts, ncr = tonumber(cts), tonumber(ccr), tonumber(nts), tonumber(ncr)
    if cts > nts or (cts == nts and ccr > ncr) then write = false end
  end
  if write then redis.call('SET', key, new) end
end
return #KEYS
"""
BATCH = 1000


class RedisOnlineStore:
    """Online store on a Redis server."""

    def __init__(self, url: str, root: Path | None = None, prefix: str = "loopstack:") -> None:
        try:
            import redis
        except ModuleNotFoundError:
            raise ConfigError(
                f"online_store {url!r} needs the redis client; install it with `pip install 'loopstack[redis]'`"
            ) from None

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.prefix = query.pop("prefix", prefix)
        clean = urlunsplit(parts._replace(query=urlencode(query)))
        self.url = clean
        self._client = redis.Redis.from_url(clean, socket_connect_timeout=5)
        self._script = self._client.register_script(WRITE_SCRIPT)
        self._errors = (redis.ConnectionError, redis.TimeoutError)

    def _key(self, view: str, key: str) -> str:
        return f"{self.prefix}{view}:{key}"

    def _call(self, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except self._errors as exc:
            raise BackendUnavailableError(
                f"cannot reach the Redis online store at {self.url}: {exc}; start Redis or fix online_store"
            ) from None

    def write_batch(self, view: str, rows: Any) -> int:
        keys = rows.column("key").to_pylist()
        values = [f"{ts}:{cr}:{value}" for ts, cr, value in zip(
            rows.column("event_ts").to_pylist(), rows.column("created_ts").to_pylist(),
            rows.column("value").to_pylist(), strict=True)]
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(keys), BATCH):
            chunk = [self._key(view, key) for key in keys[start:start + BATCH]]
            self._script(keys=chunk, args=values[start:start + BATCH], client=pipe)
        self._call(pipe.execute)
        return len(keys)

    def read(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[Record | None]]:
        flat = [self._key(view, key) for view, keys in requests for key in keys]
        raw = self._call(self._client.mget, flat) if flat else []
        out: list[list[Record | None]] = []
        position = 0
        for _, keys in requests:
            records: list[Record | None] = []
            for value in raw[position:position + len(keys)]:
                if value is None:
                    records.append(None)
                else:
                    ts, _, payload = value.decode().split(":", 2)
                    records.append((int(ts), payload))
            out.append(records)
            position += len(keys)
        return out

    def delete_view(self, view: str) -> None:
        pattern = self._key(view, "*")
        batch = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= BATCH:
                self._client.delete(*batch)
                batch.clear()
        if batch:
            self._client.delete(*batch)

    def close(self) -> None:
        self._client.close()
