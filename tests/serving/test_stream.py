"""Stream inference on the local Redis and NATS servers, including a consumer killed mid-stream."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import require_service
from tests.serving.conftest import SlowModel

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_names():
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    tag = uuid.uuid4().hex[:10]
    names = {"stream": f"ls-test-in-{tag}", "output": f"ls-test-out-{tag}", "group": f"g-{tag}"}
    try:
        yield client, names
    finally:
        client.delete(names["stream"], names["output"])
        client.close()


def _outputs(client, output: str) -> dict[str, dict[str, str]]:
    return {fields[b"source_id"].decode(): {k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in client.xrange(output)}


def _drain(model, redis_names, events: int) -> dict[str, dict[str, str]]:
    """Run one consumer until the stream is idle; it must have answered `events`. Returns the outputs by event id."""
    from loopstack.serving import RedisStreamConsumer

    client, names = redis_names
    consumer = RedisStreamConsumer(model, url=REDIS_URL, batch_size=16, block_ms=50, **names)
    try:
        assert consumer.run(idle_exit_s=0.3) == events
    finally:
        consumer.close()
    return _outputs(client, names["output"])


def test_redis_consumer_scores_acks_and_flags_poison_events(redis_names) -> None:
    client, names = redis_names
    ids = [client.xadd(names["stream"], {"data": json.dumps([i, 1, 2])}).decode() for i in range(50)]
    ids.append(client.xadd(names["stream"], {"data": json.dumps({"x0": 1, "x1": 2, "x2": 3})}).decode())
    bad = client.xadd(names["stream"], {"data": "[1, 2]"}).decode()
    outputs = _drain(SlowModel(0.0), redis_names, 52)
    assert [json.loads(outputs[i]["prediction"]) for i in ids] == [i + 3.0 for i in range(50)] + [6.0]
    assert "rows of 3 values" in outputs[bad]["error"]
    assert client.xpending(names["stream"], names["group"])["pending"] == 0


def test_redis_consumer_killed_mid_stream_loses_no_event(redis_names, tmp_path: Path) -> None:
    from loopstack.serving import RedisStreamConsumer

    client, names = redis_names
    ids = {client.xadd(names["stream"], {"data": json.dumps([i, 0, 0])}).decode() for i in range(200)}
    script = tmp_path / "consumer.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import SlowModel
        from loopstack.serving import RedisStreamConsumer
        RedisStreamConsumer(SlowModel(0.5), url={REDIS_URL!r}, consumer="doomed", batch_size=20,
                            **{names!r}).run()
    """))
    doomed = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.DEVNULL)
    try:
        # Kill it once it has written results and holds a batch it read and has not acknowledged
        # (between an ack and its next read it holds none; a busy machine can stretch that gap).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            client.xlen(names["output"]) >= 20 and client.xpending(names["stream"], names["group"])["pending"] > 0
        ):
            time.sleep(0.02)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
    stranded = client.xpending(names["stream"], names["group"])
    assert stranded["pending"] > 0  # it died holding events it had read and not acknowledged
    assert 20 <= client.xlen(names["output"]) < 200

    rescuer = RedisStreamConsumer(SlowModel(0.0), url=REDIS_URL, consumer="rescuer", batch_size=50, block_ms=50,
                                  claim_idle_ms=200, **names)
    try:
        deadline = time.monotonic() + 30
        while client.xpending(names["stream"], names["group"])["pending"] and time.monotonic() < deadline:
            rescuer.step()
        rescuer.run(idle_exit_s=0.3)
    finally:
        rescuer.close()
    outputs = _outputs(client, names["output"])
    assert set(outputs) == ids  # every event has a result: none lost
    assert all(json.loads(o["prediction"]) == float(json.loads(client.xrange(names["stream"], i, i)[0][1][b"data"])[0])
               for i, o in outputs.items())
    assert client.xpending(names["stream"], names["group"])["pending"] == 0


@pytest.fixture
def nats_names():
    require_service("NATS", "127.0.0.1", 4222)
    tag = uuid.uuid4().hex[:10]
    names = {"stream": f"LSIN{tag}", "subject": f"lsin.{tag}", "durable": f"d{tag}",
             "output_subject": f"lsout.{tag}", "output_stream": f"LSOUT{tag}"}
    yield names
    asyncio.run(_delete_streams(names["stream"], names["output_stream"]))


async def _delete_streams(*streams: str) -> None:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    for stream in streams:
        try:
            await js.delete_stream(stream)
        except Exception:
            pass
    await nc.close()


async def _publish(names: dict[str, str], count: int) -> None:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    try:
        await js.stream_info(names["stream"])
    except Exception:
        await js.add_stream(name=names["stream"], subjects=[names["subject"]])
    for i in range(count):
        await js.publish(names["subject"], json.dumps([i, 0, 0]).encode())
    await nc.close()


async def _results(names: dict[str, str], count_only: bool = False) -> dict[int, float] | int:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(names["output_stream"])
        except NotFoundError:
            return 0 if count_only else {}
        if count_only:
            return info.state.messages
        seen = {}
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            body = json.loads((await js.get_msg(names["output_stream"], seq)).data)
            seen[body["source_seq"]] = json.loads(body["prediction"])
        return seen
    finally:
        await nc.close()


async def _ack_pending(names: dict[str, str]) -> int:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        return (await nc.jetstream().consumer_info(names["stream"], names["durable"])).num_ack_pending
    finally:
        await nc.close()


def test_nats_consumer_killed_mid_stream_loses_no_event(nats_names, tmp_path: Path) -> None:
    from loopstack.serving import NatsStreamConsumer

    asyncio.run(_publish(nats_names, 150))
    script = tmp_path / "consumer.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import SlowModel
        from loopstack.serving import NatsStreamConsumer
        consumer = NatsStreamConsumer(SlowModel(0.5), batch_size=20, ack_wait_s=1.0, **{nats_names!r})
        asyncio.run(consumer.run())
    """))
    doomed = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.DEVNULL)
    try:
        # Kill it once it has published results and holds fetched events it has not acknowledged.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            asyncio.run(_results(nats_names, count_only=True)) >= 20 and asyncio.run(_ack_pending(nats_names)) > 0
        ):
            time.sleep(0.05)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
    assert 20 <= asyncio.run(_results(nats_names, count_only=True)) < 150
    assert asyncio.run(_ack_pending(nats_names)) > 0  # it died holding fetched, unacknowledged events

    async def rescue() -> int:
        consumer = NatsStreamConsumer(SlowModel(0.0), batch_size=50, ack_wait_s=1.0, fetch_timeout_s=0.3, **nats_names)
        try:
            return await consumer.run(idle_exit_s=2.5)  # longer than ack_wait: redeliveries arrive first
        finally:
            await consumer.close()

    asyncio.run(rescue())
    results = asyncio.run(_results(nats_names))
    assert sorted(results) == list(range(1, 151))  # every input sequence has a result
    assert all(results[seq] == float(seq - 1) for seq in results)


def test_redis_consumer_answers_poison_events_instead_of_dying(redis_names) -> None:
    """An event json cannot decode without a RecursionError, or one without the payload field, used to stop
    the consumer with the event pending, so every restart died on it again and the stream never moved."""
    client, names = redis_names
    good = client.xadd(names["stream"], {"data": json.dumps([1, 2, 3])}).decode()
    deep = client.xadd(names["stream"], {"data": "[" * 100_000}).decode()
    fieldless = client.xadd(names["stream"], {"payload": json.dumps([1, 2, 3])}).decode()
    after = client.xadd(names["stream"], {"data": json.dumps([4, 5, 6])}).decode()
    outputs = _drain(SlowModel(0.0), redis_names, 4)
    assert json.loads(outputs[good]["prediction"]) == 6.0 and json.loads(outputs[after]["prediction"]) == 15.0
    assert "RecursionError" in outputs[deep]["error"]
    assert "no 'data' field" in outputs[fieldless]["error"]
    assert client.xpending(names["stream"], names["group"])["pending"] == 0


class _DropsARow(SlowModel):
    """Returns one output too few for a batch holding the row whose first value is 13."""

    def predict(self, X):  # type: ignore[no-untyped-def]
        outputs = super().predict(X)
        return outputs[:-1] if (X[:, 0] == 13).any() else outputs


def test_redis_consumer_answers_a_model_returning_the_wrong_count_instead_of_dying(redis_names) -> None:
    client, names = redis_names
    ids = [client.xadd(names["stream"], {"data": json.dumps([i, 1, 2])}).decode() for i in range(10, 16)]
    outputs = _drain(_DropsARow(0.0), redis_names, 6)  # before: zip(strict=True) raised, the batch came back forever
    assert "one output per row" in outputs[ids[3]]["error"]
    assert [json.loads(outputs[i]["prediction"]) for i in ids if i != ids[3]] == [13.0, 14.0, 15.0, 17.0, 18.0]
    assert client.xpending(names["stream"], names["group"])["pending"] == 0


def test_redis_consumer_reclaims_idle_events_behind_many_busy_ones(redis_names) -> None:
    """XAUTOCLAIM scans at most count*10 pending entries; starting every scan at 0-0 never reached a dead
    consumer's idle events queued behind a live consumer's newer, not-yet-idle ones."""
    from loopstack.serving import RedisStreamConsumer

    client, names = redis_names
    ids = [client.xadd(names["stream"], {"data": json.dumps([i, 0, 0])}).decode() for i in range(100)]
    client.xgroup_create(names["stream"], names["group"], id="0")
    client.xreadgroup(names["group"], "busy", {names["stream"]: ">"}, count=100)
    client.xclaim(names["stream"], names["group"], "dead", 0, ids[60:], idle=60_000)  # dead a minute ago
    rescuer = RedisStreamConsumer(SlowModel(0.0), url=REDIS_URL, consumer="rescuer", batch_size=2, block_ms=10,
                                  **names)  # scans 20 entries per XAUTOCLAIM
    try:
        for _ in range(200):
            if not client.xpending_range(names["stream"], names["group"], "-", "+", 1, consumername="dead"):
                break
            rescuer.step()
    finally:
        rescuer.close()
    outputs = _outputs(client, names["output"])
    assert sorted(outputs) == sorted(ids[60:])
    assert [json.loads(outputs[i]["prediction"]) for i in ids[60:]] == [float(i) for i in range(60, 100)]
    assert client.xpending(names["stream"], names["group"])["pending"] == 60  # busy's events are still its own


class _Crash(BaseException):
    """Stands for the process dying in the model (OOM, a native crash): nothing after it runs, nothing is acked."""


class _CrashesOn(SlowModel):
    """Dies (raises `_Crash`) on any batch holding an event whose first value is one of `killers`."""

    def __init__(self, *killers: int) -> None:
        super().__init__(0.0)
        self.killers, self.crashes = killers, 0

    def predict(self, X):  # type: ignore[no-untyped-def]
        if np.isin(X[:, 0], self.killers).any():
            self.crashes += 1
            raise _Crash()
        return super().predict(X)


def _restart_until_drained(model: SlowModel, names: dict[str, str], rounds: int) -> None:
    """Run a consumer named "c" until the stream is drained, restarting it after each crash as a supervisor would."""
    from loopstack.serving import RedisStreamConsumer

    for _ in range(rounds):
        consumer = RedisStreamConsumer(model, url=REDIS_URL, consumer="c", batch_size=16, block_ms=10,
                                       max_deliveries=3, **names)
        try:
            consumer.run(idle_exit_s=0.2)
            return
        except _Crash:
            pass
        finally:
            consumer.close()


def test_redis_event_that_kills_the_consumer_is_answered_after_max_deliveries(redis_names) -> None:
    """An event killing the process came back forever with the healthy events of its batch; now it is answered
    with an error once delivered more than max_deliveries times, and its batch-mates get predictions."""
    client, names = redis_names
    ids = [client.xadd(names["stream"], {"data": json.dumps([i, 1, 2])}).decode() for i in range(8, 18)]
    model = _CrashesOn(13)
    _restart_until_drained(model, names, rounds=10)
    outputs = _outputs(client, names["output"])
    assert model.crashes == 3  # delivered 3 times, then answered without running the model
    assert "delivered 4 times" in outputs[ids[5]]["error"] and "max_deliveries=3" in outputs[ids[5]]["error"]
    assert [json.loads(outputs[i]["prediction"]) for i in ids if i != ids[5]] == [
        float(i + 3) for i in range(8, 18) if i != 13]
    assert client.xpending(names["stream"], names["group"])["pending"] == 0


def test_redis_healthy_events_between_two_killers_get_predictions(redis_names) -> None:
    """Every re-read of the pending list counted a delivery for every event in it, scored or not: the healthy
    events between two killers reached max_deliveries and were answered with an error, never scored."""
    client, names = redis_names
    ids = [client.xadd(names["stream"], {"data": json.dumps([i, 1, 2])}).decode() for i in range(8, 18)]
    model = _CrashesOn(11, 15)
    _restart_until_drained(model, names, rounds=20)
    outputs = _outputs(client, names["output"])
    killers = {ids[3], ids[7]}
    assert all("delivered 4 times" in outputs[i]["error"] for i in killers)
    assert [json.loads(outputs[i]["prediction"]) for i in ids if i not in killers] == [
        float(i + 3) for i in range(8, 18) if i not in (11, 15)]
    assert model.crashes == 5  # the first batch, then each killer twice more: never a healthy event's turn
    assert client.xpending(names["stream"], names["group"])["pending"] == 0


async def _bodies(names: dict[str, str]) -> dict[int, dict]:
    """Every result on the output stream by input sequence (a later duplicate replaces an earlier one)."""
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        js = nc.jetstream()
        info = await js.stream_info(names["output_stream"])
        bodies = [json.loads((await js.get_msg(names["output_stream"], seq)).data)
                  for seq in range(info.state.first_seq, info.state.last_seq + 1)]
        return {body["source_seq"]: body for body in bodies}
    finally:
        await nc.close()


def test_nats_event_that_kills_the_consumer_is_answered_after_max_deliveries(nats_names) -> None:
    from loopstack.serving import NatsStreamConsumer

    asyncio.run(_publish(nats_names, 20))  # the event [13, 0, 0] is sequence 14
    model = _CrashesOn(13)

    async def one_life() -> None:
        consumer = NatsStreamConsumer(model, batch_size=32, ack_wait_s=1.0, fetch_timeout_s=0.2, max_deliveries=3,
                                      **nats_names)
        try:
            await consumer.run(idle_exit_s=2.5)  # longer than ack_wait: the dead life's events come back first
        finally:
            await consumer.close()

    for _ in range(10):
        try:
            asyncio.run(one_life())
            break
        except _Crash:
            pass
    bodies = asyncio.run(_bodies(nats_names))
    assert model.crashes == 3
    assert "delivered 4 times (max_deliveries=3)" in bodies[14]["error"]
    assert sorted(bodies) == list(range(1, 21))
    assert all(json.loads(bodies[seq]["prediction"]) == float(seq - 1) for seq in bodies if seq != 14)
    assert asyncio.run(_ack_pending(nats_names)) == 0
