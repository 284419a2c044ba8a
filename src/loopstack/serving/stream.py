"""Stream inference: consume events, predict in micro-batches, publish results, at least once.

Redis Streams (`RedisStreamConsumer`): consumers share a consumer group. An
event is acknowledged only in the same MULTI/EXEC transaction that appends
its result to the output stream, so a result is never lost and an event is
never acknowledged without one. A consumer that dies leaves its events
pending; live consumers take them over with XAUTOCLAIM once they have been
idle for ``claim_idle_ms``, and a consumer restarted under the same name
first re-reads its own pending events.

NATS JetStream (`NatsStreamConsumer`): a durable pull consumer; results are
published to the output subject with a ``Nats-Msg-Id`` derived from the
input sequence (JetStream drops a duplicate within its dedupe window), then
the inputs are acknowledged. Events a dead consumer fetched are redelivered
after ``ack_wait_s``.

An event's payload is a JSON object of features by name (or a JSON list of
values in field order). An event that fails the model's schema gets a result
with an ``error`` instead of a prediction, and is acknowledged: a poison event
must not block the stream.

An event that kills the process itself (OOM, a native crash) cannot be answered
when it happens, so it comes back. Redelivered events are therefore scored one
at a time, each answered and acknowledged before the next, so a crash costs
only the events still behind it. An event delivered more than
``max_deliveries`` times is answered with an error, without running the model
on it. On Redis an event's count goes up only when it is scored (its pending
entry is listed, then claimed just before its turn), and the least delivered
go first, so healthy events stuck between two killers are answered before the
killers come round again. JetStream counts every delivery of every fetched
message, so there a healthy event fetched with killers again and again can
reach the limit too; keep ``batch_size`` small where crashes are likely.

Delivery is at least once, so an event can get two results (a consumer slower
than ``claim_idle_ms``, or one that dies between its write and its ack):
readers of the output deduplicate on ``source_id`` (``source_seq`` on NATS).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import numpy as np

from loopstack.core.errors import BackendUnavailableError, ConfigError, LoopstackError, SignatureError
from loopstack.serving.config import ModelSpec
from loopstack.serving.inputs import concat
from loopstack.serving.models import ModelAdapter, adapt


class _MicroBatch:
    """Shared by both consumers: decode events, predict once, encode one result per event."""

    def __init__(self, model: Any, method: str, field: str = "data", max_deliveries: int = 5) -> None:
        if max_deliveries < 1:
            raise ConfigError(f"max_deliveries={max_deliveries!r} must be at least 1")
        self.adapter: ModelAdapter = adapt(model, ModelSpec(name="stream", model=model, method=method))
        self.field, self.max_deliveries = field, max_deliveries

    def results(self, payloads: list[bytes | str | None], deliveries: list[int] | None = None) -> list[dict[str, str]]:
        """One result per payload; ``None`` is an event without the payload field. `deliveries` counts how often
        each event was delivered: one delivered too often probably kills the process, so the model never sees it."""
        rows, good, results = [], [], [{} for _ in payloads]
        for i, payload in enumerate(payloads):
            delivered = deliveries[i] if deliveries else 1
            if delivered > self.max_deliveries:
                results[i] = {"error": f"delivered {delivered} times (max_deliveries={self.max_deliveries}) without "
                                       "a result: the consumer probably died on it (OOM, crash); not scored"}
                continue
            try:
                rows.append(self._decode(payload))
                good.append(i)
            except Exception as error:  # any undecodable event (even one nested too deep for json) is answered
                results[i] = {"error": str(error) if isinstance(error, LoopstackError | ValueError)
                              else f"{type(error).__name__}: {error}"}
        if rows:
            for i, output in zip(good, self._predict(rows), strict=True):
                results[i] = output
        for result in results:
            result.update(model=str(getattr(self.adapter.model, "name", None) or ""), version=self.adapter.version)
        return results

    def _decode(self, payload: bytes | str | None) -> Any:
        """One event's row; an event must not stop the consumer, so every failure here becomes its error result."""
        if payload is None:
            raise SignatureError(f"the event has no {self.field!r} field; put the JSON features in {self.field!r}")
        return self.adapter.schema.from_instances([json.loads(payload)])

    def _predict(self, rows: list[Any]) -> list[dict[str, str]]:
        try:
            outputs = self.adapter.run(concat(rows))  # a wrong count raises here, inside the guard
            return [{"prediction": json.dumps(np.asarray(o).tolist())} for o in outputs]
        except Exception as error:
            if len(rows) == 1:  # this event breaks the model: answer it with the error, don't redeliver forever
                return [{"error": f"{type(error).__name__}: {error}"}]
            return [r for row in rows for r in self._predict([row])]


def _one_by_one(count: int, delivered: int) -> range:
    """The order to score `count` redelivered JetStream messages alone: alternate ends with each delivery, so
    the messages queued behind one that crashes the process are reached from the other side on its next one."""
    return range(count - 1, -1, -1) if delivered % 2 else range(count)


def _raw(response: Any, **options: Any) -> Any:
    return response


class RedisStreamConsumer:
    """Predict on a Redis stream through a consumer group; results go to another stream.

    Examples
    --------
    >>> from sklearn.dummy import DummyRegressor
    >>> model = DummyRegressor().fit([[0.0]], [1.0])
    >>> consumer = RedisStreamConsumer(model, stream="events", group="scorers", output="scores")
    >>> consumer.consumer.startswith("scorers-")
    True
    """

    def __init__(self, model: Any, *, stream: str, group: str, output: str, url: str = "redis://127.0.0.1:6379/0",
                 consumer: str | None = None, batch_size: int = 256, block_ms: int = 500,
                 claim_idle_ms: int = 30_000, field: str = "data", method: str = "auto",
                 output_maxlen: int | None = None, max_deliveries: int = 5) -> None:
        self.batch = _MicroBatch(model, method, field, max_deliveries)
        self.url, self.stream, self.group, self.output, self.field = url, stream, group, output, field
        self.consumer = consumer or f"{group}-{socket.gethostname()}-{threading.get_native_id()}-{time.time_ns()}"
        self.batch_size, self.block_ms, self.claim_idle_ms = batch_size, block_ms, claim_idle_ms
        self.output_maxlen = output_maxlen
        self.processed = 0
        self._client: Any = None
        self._own_pending = True  # first re-read what this consumer name already holds
        self._claim_cursor: bytes | str = "0-0"  # where the XAUTOCLAIM scan of the pending list goes on

    @property
    def client(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.url)
            self._client.set_response_callback("XAUTOCLAIM", _raw)  # redis-py drops the cursor of a JUSTID reply
            try:
                self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
            except redis.ConnectionError as error:
                raise BackendUnavailableError(f"Redis at {self.url} is unreachable ({error})") from error
        return self._client

    def step(self) -> int:
        """Process one micro-batch (own pending, else reclaimed, else new events); returns its size.

        Own pending and reclaimed events were delivered before, maybe to a consumer they killed: each is
        claimed (counting the delivery) just before it is scored and acknowledged alone, least delivered first."""
        redelivered = self._pending_own() or self._claim()
        if not redelivered:
            entries = self._read_new()
            self._answer(entries, [1] * len(entries))
            return len(entries)
        for entry_id, delivered in sorted(redelivered, key=lambda pending: pending[1]):  # stable: oldest first
            entry = self._take(entry_id)
            if entry is not None:
                self._answer([entry], [delivered + 1])
        return len(redelivered)

    def _answer(self, entries: list[tuple[bytes, dict[bytes, bytes]]], deliveries: list[int]) -> None:
        """Score `entries`, then append their results and acknowledge them in one transaction."""
        if not entries:
            return
        ids = [entry_id for entry_id, _ in entries]
        results = self.batch.results([fields.get(self.field.encode()) for _, fields in entries], deliveries)
        with self.client.pipeline(transaction=True) as pipe:
            for entry_id, result in zip(ids, results, strict=True):
                pipe.xadd(self.output, {"source_id": entry_id, **result}, maxlen=self.output_maxlen,
                          approximate=self.output_maxlen is not None)
            pipe.xack(self.stream, self.group, *ids)
            pipe.execute()
        self.processed += len(ids)

    def _take(self, entry_id: bytes) -> tuple[bytes, dict[bytes, bytes]] | None:
        """Claim one pending event for this consumer, which counts a delivery, and read it; None if trimmed."""
        claimed = self.client.xclaim(self.stream, self.group, self.consumer, 0, [entry_id])
        if claimed and claimed[0][1] is not None:
            return claimed[0]
        self.client.xack(self.stream, self.group, entry_id)  # trimmed before anyone scored it: release it
        return None

    def _pending_own(self) -> list[tuple[bytes, int]]:
        """What this consumer name holds (a restart re-reads it), with delivery counts; counts nothing."""
        if not self._own_pending:
            return []
        pending = self.client.xpending_range(self.stream, self.group, "-", "+", self.batch_size,
                                             consumername=self.consumer)
        self._own_pending = bool(pending)
        return [(p["message_id"], int(p["times_delivered"])) for p in pending]

    def _claim(self) -> list[tuple[bytes, int]]:
        """Take over events idle for claim_idle_ms, without counting a delivery (JUSTID), with their counts.

        One call scans at most 10 * batch_size pending entries, so the scan goes on from the cursor Redis
        returns (0-0 again once it has passed the end)."""
        reply = self.client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                       start_id=self._claim_cursor, count=self.batch_size, justid=True)
        self._claim_cursor, ids = reply[0], list(reply[1])
        deleted = list(reply[2]) if len(reply) > 2 else []
        if deleted:  # trimmed away before anyone scored them: nothing to deliver, so release them
            self.client.xack(self.stream, self.group, *deleted)
        if not ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
            pending = pipe.execute()
        return [(entry_id, int(found[0]["times_delivered"]) if found else 1)
                for entry_id, found in zip(ids, pending, strict=True)]

    def _read_new(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return self._xreadgroup(">", block=self.block_ms)

    def _xreadgroup(self, start: str, block: int | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=self.batch_size,
                                       block=block)
        return [(i, f) for _, entries in reply or [] for i, f in entries if f is not None]

    def run(self, stop: threading.Event | None = None, idle_exit_s: float | None = None) -> int:
        """Process until `stop` is set (or nothing arrived for `idle_exit_s`); returns events processed."""
        stop = stop or threading.Event()
        last = time.monotonic()
        while not stop.is_set():
            if self.step():
                last = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                break
        return self.processed

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class NatsStreamConsumer:
    """Predict on a NATS JetStream subject with a durable pull consumer; results go to `output_subject`.

    Examples
    --------
    >>> from sklearn.dummy import DummyRegressor
    >>> model = DummyRegressor().fit([[0.0]], [1.0])
    >>> NatsStreamConsumer(model, stream="EVENTS", subject="events.in", durable="scorer",
    ...                    output_subject="events.scored").output_stream
    'EVENTS-scored'
    """

    def __init__(self, model: Any, *, stream: str, subject: str, durable: str, output_subject: str,
                 servers: str = "nats://127.0.0.1:4222", output_stream: str | None = None, batch_size: int = 256,
                 fetch_timeout_s: float = 0.5, ack_wait_s: float = 30.0, method: str = "auto",
                 max_deliveries: int = 5) -> None:
        self.batch = _MicroBatch(model, method, max_deliveries=max_deliveries)
        self.stream, self.subject, self.durable, self.output_subject = stream, subject, durable, output_subject
        self.servers, self.output_stream = servers, output_stream or f"{stream}-scored"
        self.batch_size, self.fetch_timeout_s, self.ack_wait_s = batch_size, fetch_timeout_s, ack_wait_s
        self.processed = 0
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None

    async def connect(self) -> None:
        """Connect, and create the input and output streams and the durable consumer when missing."""
        import nats
        from nats.js.api import ConsumerConfig
        from nats.js.errors import NotFoundError

        try:
            self._nc = await nats.connect(self.servers, connect_timeout=2, max_reconnect_attempts=2)
        except Exception as error:
            raise BackendUnavailableError(f"NATS at {self.servers} is unreachable ({error})") from error
        self._js = self._nc.jetstream()
        for name, subject in ((self.stream, self.subject), (self.output_stream, self.output_subject)):
            try:
                await self._js.stream_info(name)
            except NotFoundError:
                await self._js.add_stream(name=name, subjects=[subject])
        config = ConsumerConfig(ack_wait=self.ack_wait_s, max_ack_pending=max(1000, 4 * self.batch_size))
        self._sub = await self._js.pull_subscribe(self.subject, durable=self.durable, stream=self.stream,
                                                  config=config)

    async def step(self) -> int:
        """Fetch, predict and publish one micro-batch, then acknowledge it; returns its size."""
        import nats.errors

        if self._sub is None:
            await self.connect()
        try:
            messages = await self._sub.fetch(self.batch_size, timeout=self.fetch_timeout_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return 0
        await self._answer([m for m in messages if m.metadata.num_delivered == 1])
        redelivered = [m for m in messages if m.metadata.num_delivered > 1]  # maybe to a consumer they killed
        for i in _one_by_one(len(redelivered), max((m.metadata.num_delivered for m in redelivered), default=1)):
            await self._answer([redelivered[i]])
        return len(messages)

    async def _answer(self, messages: list[Any]) -> None:
        """Score `messages`, publish their results, then acknowledge them."""
        if not messages:
            return
        deliveries = [m.metadata.num_delivered for m in messages]
        results = await asyncio.to_thread(self.batch.results, [m.data for m in messages], deliveries)
        await asyncio.gather(*(
            self._js.publish(self.output_subject, json.dumps({"source_seq": m.metadata.sequence.stream, **r}).encode(),
                             headers={"Nats-Msg-Id": f"{self.stream}:{m.metadata.sequence.stream}"})
            for m, r in zip(messages, results, strict=True)
        ))
        await asyncio.gather(*(m.ack() for m in messages))
        self.processed += len(messages)

    async def run(self, stop: asyncio.Event | None = None, idle_exit_s: float | None = None) -> int:
        """Process until `stop` is set (or nothing arrived for `idle_exit_s`); returns events processed."""
        stop = stop or asyncio.Event()
        last = time.monotonic()
        while not stop.is_set():
            if await self.step():
                last = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                break
        return self.processed

    async def close(self) -> None:
        """Close the connection; fetched and unacknowledged events are redelivered after ack_wait_s."""
        if self._nc is not None:
            await self._nc.close()
            self._nc = self._js = self._sub = None
