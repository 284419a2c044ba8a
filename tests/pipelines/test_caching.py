"""Caching: a re-run skips unchanged steps and says so; code, parameter and input changes miss."""

from __future__ import annotations

import hashlib

import pytest

from loopstack.core.errors import IntegrityError
from loopstack.core.project import Project
from loopstack.pipelines import code_digest, get_run, lineage, pipeline, step
from loopstack.pipelines.fingerprint import value_digest


class Calls(list):
    """Records step calls. Not a plain list: a plain list's value is part of the code digest of the
    steps that read it, and this one changes with every call."""


CALLS = Calls()
SCALE = 2


@step
def source(n: int) -> list:
    CALLS.append("source")
    return list(range(n))


@step
def scaled(values: list) -> list:
    CALLS.append("scaled")
    return [v * SCALE for v in values]


@step
def total(values: list) -> int:
    CALLS.append("total")
    return sum(values)


@pipeline
def chain(n: int = 4):
    return total(scaled(source(n)))


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


def test_rerun_skips_every_step_and_records_why(project: Project) -> None:
    first = chain.run(project)
    assert first.output() == 12 and first.cached == []
    second = chain.run(project)
    assert second.output() == 12
    assert second.cached == ["source", "scaled", "total"] and second.executed == []
    assert CALLS == ["source", "scaled", "total"]  # nothing ran the second time
    cached = project.events.list(kind="step.cached", limit=10)
    assert len(cached) == 3
    assert {e.cause for e in cached} == {second.started_event}
    assert all(e.payload["reason"].startswith("same code") for e in cached)
    assert get_run(project, second.id[:10]).steps[0].status == "cached"


def test_a_parameter_change_reruns_the_step_and_what_depends_on_it(sqlite_project: Project) -> None:
    chain.run(sqlite_project, params={"n": 4})
    CALLS.clear()
    run = chain.run(sqlite_project, params={"n": 5})
    assert run.output() == 20
    assert CALLS == ["source", "scaled", "total"]


def test_an_unchanged_input_digest_stops_the_rerun_early(sqlite_project: Project) -> None:
    global SCALE
    chain.run(sqlite_project)
    CALLS.clear()
    SCALE = 0  # scaled's code reads SCALE: a different digest, and a different output
    try:
        run = chain.run(sqlite_project)
        assert run.cached == ["source"] and CALLS == ["scaled", "total"]
        assert run.output() == 0
    finally:
        SCALE = 2
    CALLS.clear()
    run = chain.run(sqlite_project)  # back to the first version: every step is cached again
    assert run.cached == ["source", "scaled", "total"]


def test_a_code_change_misses_but_a_comment_does_not(sqlite_project: Project) -> None:
    @step
    def value() -> int:
        return 1

    @pipeline
    def one():
        return value()

    one.run(sqlite_project)
    assert one.run(sqlite_project).cached == ["value"]

    @step(name="value")
    def value_commented() -> int:
        # a comment and a docstring are not behaviour
        return 1

    @pipeline(name="one")
    def same():
        return value_commented()

    assert same.run(sqlite_project).cached == ["value"]

    @step(name="value")
    def value_changed() -> int:
        return 2

    @pipeline(name="one")
    def changed():
        return value_changed()

    run = changed.run(sqlite_project)
    assert run.cached == [] and run.output() == 2


def test_an_upstream_change_with_equal_output_keeps_downstream_cached(sqlite_project: Project) -> None:
    @step
    def base() -> list:
        return [1, 2, 3]

    @step
    def consume(values: list) -> int:
        CALLS.append("consume")
        return len(values)

    @pipeline
    def p():
        return consume(base())

    p.run(sqlite_project)

    @step(name="base")
    def base_rewritten() -> list:
        return list(range(1, 4))  # new code, same bytes out

    @pipeline(name="p")
    def p2():
        return consume(base_rewritten())

    run = p2.run(sqlite_project)
    assert run.executed == ["base"] and run.cached == ["consume"]  # keyed on the input's digest


def test_code_digest_sees_closures_helpers_and_defaults() -> None:
    def helper(x: int) -> int:
        return x + 1

    def make(k: int):
        def f(x: int) -> int:
            return helper(x) * k

        return f

    assert code_digest(make(2)) != code_digest(make(3))  # closure value

    def with_default(x: int, y: int = 1) -> int:
        return x + y

    def with_other_default(x: int, y: int = 2) -> int:
        return x + y

    assert code_digest(with_default) != code_digest(with_other_default)


def test_deleted_artifact_is_a_miss_and_tampered_bytes_fail_the_read(sqlite_project: Project) -> None:
    run = chain.run(sqlite_project)
    digest = run.results["total"].digest
    path = sqlite_project.artifacts.path_of(digest)
    with open(path, "wb") as handle:
        handle.write(b"99")
    with pytest.raises(IntegrityError, match=digest):
        run.output()
    import os

    os.unlink(path)
    CALLS.clear()
    rerun = chain.run(sqlite_project)
    assert rerun.cached == ["source", "scaled"] and CALLS == ["total"]
    assert rerun.output() == 12


def test_a_truncated_cached_output_is_a_miss_and_is_stored_again(sqlite_project: Project) -> None:
    """Only existence was checked: the truncated output was a hit, and the step reading it failed."""
    run = chain.run(sqlite_project)
    path = sqlite_project.artifacts.path_of(run.steps["scaled"].outputs[0]["digest"])
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    CALLS.clear()
    rerun = chain.run(sqlite_project)
    assert rerun.cached == ["source", "total"] and CALLS == ["scaled"]
    digest = run.steps["scaled"].outputs[0]["digest"]
    assert sqlite_project.artifacts.get_bytes(digest) == data and rerun.output() == 12  # whole again


def test_lineage_walks_from_a_result_back_to_the_source(sqlite_project: Project) -> None:
    run = chain.run(sqlite_project, params={"n": 3})
    trail = lineage(sqlite_project, run.results["total"].digest)
    assert [entry["step"] for entry in trail] == ["total", "scaled", "source"]
    assert trail[-1]["params"] == {"n": 3}
    assert trail[0]["inputs"] == {"values": trail[1]["digest"]}


def test_cache_can_be_switched_off_per_step(sqlite_project: Project) -> None:
    @step(cache=False)
    def always() -> int:
        CALLS.append("always")
        return 1

    @pipeline
    def p():
        return always()

    p.run(sqlite_project)
    p.run(sqlite_project)
    assert CALLS == ["always", "always"]


def test_steps_pinned_to_the_same_version_do_not_share_a_cache_entry(sqlite_project: Project) -> None:
    @step(version="1")
    def fetch_users(day: str) -> list:
        return [f"user@{day}"]

    @step(version="1")
    def fetch_orders(day: str) -> list:
        return [f"order@{day}"]

    @pipeline
    def daily(day: str = "2024-01-01"):
        return {"users": fetch_users(day), "orders": fetch_orders(day)}

    run = daily.run(sqlite_project)
    assert run.cached == [] and run.output("orders") == ["order@2024-01-01"]


def test_code_digest_sees_what_a_step_reads_through_a_module_and_a_class(tmp_path, monkeypatch) -> None:
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))

    def digest(helpers: str, steps: str) -> str:
        for name in ("cache_helpers", "cache_steps"):
            sys.modules.pop(name, None)
        (tmp_path / "cache_helpers.py").write_text(helpers)
        (tmp_path / "cache_steps.py").write_text(steps)
        importlib.invalidate_caches()
        return code_digest(importlib.import_module("cache_steps").f)

    via_module = "import cache_helpers as h\ndef f(x):\n    return h.g(x) * h.K\n"
    base = "K = 2\ndef g(x):\n    return x + 1\n"
    assert digest(base, via_module) != digest(base.replace("K = 2", "K = 3"), via_module)
    assert digest(base, via_module) != digest(base.replace("x + 1", "x + 2"), via_module)
    via_class = "from cache_helpers import M\ndef f(x):\n    return M().run(x)\n"
    klass = "SCALE = 2\nclass M:\n    def run(self, x):\n        return x * SCALE\n"
    assert digest(klass, via_class) != digest(klass.replace("SCALE = 2", "SCALE = 3"), via_class)
    nested = "CONFIG = {'model': {'depth': 3}}\ndef f(x):\n    return CONFIG['model']['depth'] * x\n"
    assert digest("", nested) != digest("", nested.replace("3}}", "4}}"))
    sys.modules.pop("cache_helpers", None)
    sys.modules.pop("cache_steps", None)


def _load(path: object, name: str) -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_code_edited_on_disk_after_import_is_not_digested_as_the_new_code(tmp_path: object) -> None:
    """A long-lived process (the loop scheduler) runs the code it imported; the digest must say so.

    Before, the digest read the edited file: the old code's result was cached under the new
    code's digest, and a fresh process running the new code was served it.
    """
    import os
    from pathlib import Path

    path = Path(str(tmp_path)) / "flows_edited.py"
    path.write_text("import math\n\n\ndef scale(n):\n    return math.floor(n) * 2\n")
    running = _load(path, "flows_edited_old")
    before = code_digest(running.scale)
    path.write_text("import math\n\n\ndef scale(n):\n    # a comment\n    return math.floor(n) * 2\n")
    os.utime(path, (os.path.getmtime(path) + 5,) * 2)
    assert code_digest(running.scale) == before  # a comment changes nothing: still the syntax tree's digest
    path.write_text("import math\n\n\ndef scale(n):\n    return math.floor(n) * 3\n")
    os.utime(path, (os.path.getmtime(path) + 10,) * 2)
    fresh = _load(path, "flows_edited_new")
    assert fresh.scale(2) == 6 and running.scale(2) == 4
    assert code_digest(running.scale) != code_digest(fresh.scale)


@step
def describe(value: object) -> str:
    return repr(value)


@pipeline
def described(value: object = None):
    return describe(value)


@pytest.mark.parametrize(("first", "second"), [({1: "a"}, {"1": "a"}), ((1, 2), [1, 2]), ({"k": (1,)}, {"k": [1]})])
def test_parameters_that_json_writes_alike_are_cached_apart(sqlite_project: Project, first: object,
                                                            second: object) -> None:
    """JSON turns int keys into strings and tuples into lists: the second run was served the first's result."""
    assert described.run(sqlite_project, params={"value": first}).output() == repr(first)
    assert described.run(sqlite_project, params={"value": second}).output() == repr(second)


def test_a_plain_json_parameter_keeps_its_digest() -> None:
    """Digests of JSON values are what they were, so existing cache entries still hit."""
    value = {"lr": 0.1, "layers": [64, 32], "name": "m", "on": True, "none": None}
    text = '{"layers":[64,32],"lr":0.1,"name":"m","none":null,"on":true}'
    assert value_digest(value) == hashlib.sha256(b"json:" + text.encode()).hexdigest()
    assert value_digest({1: "a"}) != value_digest({"1": "a"}) and value_digest((1,)) != value_digest([1])
    assert value_digest({1: "a", 2: "b"}) == value_digest({2: "b", 1: "a"})  # still order-blind


def test_code_digest_sees_module_constants_read_by_defaults_and_class_attributes(tmp_path, monkeypatch) -> None:
    """A default (``def scaled(x, k=SCALE)``) and a class attribute are evaluated at module scope: their
    values, not only their syntax, must count, or editing SCALE serves the old cached result."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def digest(steps: str, scale: int) -> str:
        name = f"defaults_steps_{scale}_{len(steps)}"
        (tmp_path / f"{name}.py").write_text(steps.replace("SCALE = 0", f"SCALE = {scale}"))
        return code_digest(_load(tmp_path / f"{name}.py", name).f)

    positional = "SCALE = 0\ndef scaled(x, k=SCALE):\n    return x * k\ndef f(x):\n    return scaled(x)\n"
    keyword = "SCALE = 0\ndef scaled(x, *, k=SCALE):\n    return x * k\ndef f(x):\n    return scaled(x)\n"
    attribute = "SCALE = 0\nclass M:\n    k = SCALE\n    def run(self, x):\n        return x * self.k\n"
    attribute += "def f(x):\n    return M().run(x)\n"
    for steps in (positional, keyword, attribute):
        assert digest(steps, 3) != digest(steps, 10)


def test_lambdas_on_one_line_have_their_own_digests(tmp_path: object) -> None:
    """The source of a lambda is its whole line: two lambdas on one line were digested alike, so a step
    given the one as a parameter was served the other's cached result."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "one_line_lambdas.py"
    path.write_text("inc, dec = (lambda x: x + 1), (lambda x: x - 1)\n")
    module = _load(path, "one_line_lambdas")
    assert module.inc(1) != module.dec(1)
    assert code_digest(module.inc) != code_digest(module.dec)
    assert value_digest(module.inc) != value_digest(module.dec)


def _reader(table: object):
    def lookup(i: int) -> object:
        return table[i]  # type: ignore[index]

    return lookup


@pytest.mark.parametrize("size", [1001, 100_000])
def test_a_large_constant_table_counts_by_value(size: int) -> None:
    """Containers of more than 1000 items counted by type only: editing one entry of a lookup table a
    step reads left its digest as it was, and the stale cached result was served."""
    table = list(range(size))
    edited = [*table[:-1], -1]
    assert code_digest(_reader(table)) != code_digest(_reader(edited))
    assert code_digest(_reader(tuple(table))) != code_digest(_reader(tuple(edited)))
    assert code_digest(_reader(set(table))) != code_digest(_reader(set(edited)))
    lookup = dict.fromkeys(table, "a")
    assert code_digest(_reader(lookup)) != code_digest(_reader({**lookup, 0: "b"}))
    assert code_digest(_reader({"rows": table})) != code_digest(_reader({"rows": edited}))  # nested too
    assert code_digest(_reader(table)) == code_digest(_reader(list(range(size))))


def test_a_numpy_constant_counts_by_dtype_shape_and_bytes() -> None:
    np = pytest.importorskip("numpy")
    weights = np.arange(6.0).reshape(2, 3)
    assert code_digest(_reader(weights)) == code_digest(_reader(weights.copy()))
    assert code_digest(_reader(weights)) != code_digest(_reader(weights + np.eye(2, 3)))
    assert code_digest(_reader(weights)) != code_digest(_reader(weights.reshape(3, 2)))
    assert code_digest(_reader(weights)) != code_digest(_reader(weights.astype(np.float32)))
    assert code_digest(_reader(weights.T)) == code_digest(_reader(np.ascontiguousarray(weights.T)))


def test_a_small_constant_keeps_its_digest_and_one_that_cannot_be_hashed_warns() -> None:
    from loopstack.pipelines import fingerprint

    for value in ([1, "a"], (1,), (1, 2.5), {2: "b", 1: (None,)}, {"x", 3}, [[1], (2, {3: 4})], [], ()):
        streamed = hashlib.sha256()
        fingerprint._write_stable_repr(value, streamed)  # in pieces, as large tables are
        assert streamed.hexdigest() == hashlib.sha256(fingerprint._stable_repr(value).encode()).hexdigest()
    cycle: list = [1]
    cycle.append(cycle)
    with pytest.warns(UserWarning, match=r"table \(list\) read by a step .* @step\(version=\.\.\.\)"):
        code_digest(_reader(cycle))
