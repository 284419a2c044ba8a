"""The CLI groups on a project with definitions and a `loop:` section, and a scheduler killed mid-action."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from loopstack.core.errors import ConfigError, NotFoundError
from loopstack.core.events import Event
from loopstack.core.project import Project
from loopstack.pipelines.cli import loop, pipelines
from loopstack.pipelines.config import policies_from_config
from loopstack.pipelines.loader import discover
from loopstack.pipelines.triggers import OnEvent

FLOWS = '''
import os
import time
from pathlib import Path

from loopstack.pipelines import Hook, OnEvent, Policy, RunPipeline, pipeline, step


@step
def numbers(n: int) -> list:
    print("making", n, "numbers")
    return list(range(n))


@step
def total(values: list) -> int:
    return sum(values)


@pipeline
def train(n: int = 4):
    return total(numbers(n))


def announce(ctx):
    return {"trained": ctx.results["train"]["pipeline_run"]}


def slow_rollout(ctx):
    stage = ctx.state.get("stage", 0) + 1
    ctx.checkpoint(stage=stage)
    if not ctx.resumed:
        Path(os.environ["LOOPSTACK_TEST_MARKER"]).write_text("checkpointed")
        time.sleep(120)  # killed here
    return {"stage": stage, "resumed": ctx.resumed}


rollout = Policy("rollout", when=[OnEvent("go")], then=[RunPipeline(train), Hook(slow_rollout)])
'''

LOOP = {
    "poll_s": 0.2,
    "policies": [{
        "name": "nightly",
        "when": [{"schedule": "0 3 * * *"}, {"drift": {"monitor": "txns", "share_above": 0.3}}],
        "then": [{"pipeline": "flows.py:train", "params": {"n": 3}}, {"hook": "flows.py:announce"}],
        "cooldown_s": 0,
    }],
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    Project.init(folder, name="cli-test").close()
    (folder / "flows.py").write_text(FLOWS)
    config = yaml.safe_load((folder / "loopstack.yaml").read_text())
    config.update(definitions=["flows.py"], loop=LOOP)
    (folder / "loopstack.yaml").write_text(yaml.safe_dump(config))
    return folder


def invoke(group: object, root: Path, *args: str) -> str:
    result = CliRunner().invoke(group, list(args), obj={"project_path": str(root)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_pipelines_run_list_show_and_logs(root: Path) -> None:
    first = invoke(pipelines, root, "run", "flows.py:train", "-p", "n=5", "-q")
    assert "2 step(s) ran, 0 skipped" in first
    second = invoke(pipelines, root, "run", "train", "-p", "n=5", "-q")
    assert "0 step(s) ran, 2 skipped (cached)" in second and "skipped (cached)" in second
    listing = invoke(pipelines, root, "list")
    assert "train" in listing and "n=4" in listing
    run_id = second.split("run ", 1)[1].split(" ", 1)[0]
    assert "numbers" in invoke(pipelines, root, "show", run_id)
    assert invoke(pipelines, root, "logs", run_id, "numbers") == "making 5 numbers\n"
    with pytest.raises(NotFoundError, match="no pipeline 'nope'"):
        CliRunner().invoke(pipelines, ["run", "nope"], obj={"project_path": str(root)}, catch_exceptions=False)


def test_run_of_a_missing_name_lists_only_the_files_pipelines(root: Path) -> None:
    """The error listed every imported name (os, time, Path, step...) as if they were pipelines."""
    with pytest.raises(NotFoundError) as error:
        CliRunner().invoke(pipelines, ["run", "flows.py:nope"], obj={"project_path": str(root)},
                           catch_exceptions=False)
    assert str(error.value) == "flows.py has no pipeline 'nope'; its pipelines: ['train']"


def test_yaml_policies_become_policies_and_bad_ones_are_named(root: Path) -> None:
    (policy,) = policies_from_config(LOOP, root)
    assert [a.name for a in policy.actions] == ["train", "announce"]
    assert [t.key.split(":")[0] for t in policy.triggers()] == ["schedule", "event", "event"]
    with pytest.raises(ConfigError, match=r"loop.policies.0.cooldown_s"):
        policies_from_config({"policies": [{"name": "x", "then": [], "cooldown_s": -1}]}, root)
    with pytest.raises(ConfigError, match="needs exactly one of schedule"):
        policies_from_config({"policies": [{"name": "x", "when": [{"cron": "* * * * *"}], "then": [
            {"hook": "flows.py:announce"}]}]}, root)


@pytest.mark.parametrize(("when", "message"), [
    ({"drift": "transactions"}, r"when: drift: 'transactions' must be a mapping.*drift: \{monitor: 'transactions'\}"),
    ({"new_data": "card_stats"}, r"when: new_data: 'card_stats' must be a mapping.*\{view: 'card_stats'\}"),
    ({"performance": {"metric": "auc"}}, r"when: performance: .* lacks below"),
    ({"performance": {"below": 0.8}}, r"when: performance: .* lacks metric"),
    ({"drift": {"monitor": "t", "share_above": "0.3"}}, r"when: drift: .*share_above='0.3' must be a number"),
    ({"performance": {"metric": "auc", "below": "0.8"}}, r"when: performance: .*threshold='0.8' must be a number"),
    ({"new_data": {"view": "v", "min_rows": "10"}}, r"when: new_data: .*min_rows='10' must be a number"),
])
def test_yaml_triggers_that_would_lose_their_subject_or_never_fire_are_refused(
    root: Path, when: dict, message: str
) -> None:
    """A plain string became a trigger for every monitor; a missing or quoted threshold never held."""
    section = {"policies": [{"name": "p", "when": [when], "then": [{"hook": "flows.py:announce"}]}]}
    with pytest.raises(ConfigError, match=r"loop.policies\[p\]\." + message):
        policies_from_config(section, root)


def test_yaml_triggers_without_options_still_mean_any_subject(root: Path) -> None:
    section = {"policies": [{"name": "p", "when": [{"quality_failed": None}, {"schedule": "0 3 * * *"}],
                             "then": [{"hook": "flows.py:announce"}]}]}
    (policy,) = policies_from_config(section, root)
    assert policy.when[0].subject is None and policy.when[1].cron == "0 3 * * *"


def test_yaml_event_conditions_must_be_a_mapping_and_hooks_take_no_params(root: Path) -> None:
    """A list under where crashed with AttributeError; params on a hook were silently ignored."""
    event = {"event": {"kind": "x", "where": [["score", ">", 3]]}}
    section = {"policies": [{"name": "p", "when": [event], "then": [{"hook": "flows.py:announce"}]}]}
    with pytest.raises(ConfigError, match=r"loop.policies\[p\].when.event.where: \[\['score'.* must be a mapping"):
        policies_from_config(section, root)
    for extra in ({"params": {"n": 1}}, {"executor": "process"}):
        hook = {"hook": "flows.py:announce", **extra}
        with pytest.raises(ConfigError, match=rf"loop.policies\[p\].then: unknown keys \['{next(iter(extra))}'\]"):
            policies_from_config({"policies": [{"name": "p", "then": [hook]}]}, root)


@pytest.mark.parametrize(("when", "message"), [
    ({"drift": {"monitor": "tx"}, "share_above": 0.3},
     r"when: unknown key\(s\) \['share_above'\] beside drift.*drift: \{monitor: 'tx', share_above: 0.3\}"),
    ({"drift": {"monitor": "tx"}, "shedule": "0 3 * * *"}, r"when: unknown key\(s\) \['shedule'\] beside drift"),
    ({"quality_failed": None, "suite": "t"}, r"when: unknown key\(s\) \['suite'\].*quality_failed: \{suite: 't'\}"),
])
def test_yaml_keys_beside_the_trigger_kind_are_refused(root: Path, when: dict, message: str) -> None:
    """A misindented share_above made a plain drift trigger (it fired on every verdict); a typo vanished."""
    section = {"policies": [{"name": "p", "when": [when], "then": [{"hook": "flows.py:announce"}]}]}
    with pytest.raises(ConfigError, match=r"loop.policies\[p\]\." + message):
        policies_from_config(section, root)


@pytest.mark.parametrize("when", [
    {"drift": {"monitor": "tx", "share": 0.3}}, {"performance": {"metric": "auc", "below": 0.8, "metrc": "x"}},
    {"quality_failed": {"suit": "t"}}, {"new_data": {"view": "v", "rows": 5}}, {"event": {"kind": "x", "subjet": "m"}},
    {"schedule": {"cron": "0 3 * * *", "tz": "UTC"}},
])
def test_yaml_unknown_keys_inside_a_trigger_are_refused(root: Path, when: dict) -> None:
    section = {"policies": [{"name": "p", "when": [when], "then": [{"hook": "flows.py:announce"}]}]}
    with pytest.raises(ConfigError, match=rf"loop.policies\[p\].when: {next(iter(when))}: .* has wrong keys"):
        policies_from_config(section, root)


def test_yaml_event_from_start_must_be_a_bool_and_a_predicate_a_function(root: Path) -> None:
    """A quoted "false" was truthy (the cursor started at 0, so every old event fired); a predicate string was
    kept and raised TypeError inside the loop's tick."""
    (root / "preds.py").write_text("def high(event):\n    return event.payload.get('score', 0) > 3\n\nLIMIT = 3\n")

    def section(**options: object) -> dict:
        event = {"event": {"kind": "x.y", **options}}
        return {"policies": [{"name": "p", "when": [event], "then": [{"hook": "flows.py:announce"}]}]}

    with pytest.raises(ConfigError, match=r"when: event: trigger 'x.y': from_start='false' must be true or false"):
        policies_from_config(section(from_start="false"), root)
    with pytest.raises(ConfigError, match=r"when: event: predicate 'nomodule:fn': cannot import 'nomodule'"):
        policies_from_config(section(predicate="nomodule:fn"), root)
    with pytest.raises(ConfigError, match=r"when: event: predicate 'preds.py:LIMIT' is a int, not a function"):
        policies_from_config(section(predicate="preds.py:LIMIT"), root)
    with pytest.raises(ConfigError, match=r"when: event: predicate=3 must name a function"):
        policies_from_config(section(predicate=3), root)
    (policy,) = policies_from_config(section(predicate="preds.py:high", from_start=True), root)
    (trigger,) = policy.when
    assert trigger.from_start is True and trigger.predicate.__name__ == "high"
    assert trigger.matches(Event(1, 0.0, "x.y", "s", {"score": 5}, None))
    assert not trigger.matches(Event(2, 0.0, "x.y", "s", {"score": 1}, None))


def test_an_on_event_trigger_refuses_a_non_bool_from_start_or_a_predicate_that_is_not_callable() -> None:
    with pytest.raises(ConfigError, match=r"from_start='false' must be true or false"):
        OnEvent("x.y", from_start="false")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"predicate='mod:fn' is not callable"):
        OnEvent("x.y", predicate="mod:fn")  # type: ignore[arg-type]


@pytest.mark.parametrize(("extra", "message"), [
    ({"params": ["days", 30]}, r"params=\['days', 30\] must be a mapping .*write params: \{days: 30\}"),
    ({"params": "days=30"}, r"params='days=30' must be a mapping .*write params: \{days: 30\}"),
    ({"executor": "proces"}, r"executor='proces' is not an executor; use one of local, process, ray"),
    ({"executor": 3}, r"executor=3 is not an executor"),
])
def test_yaml_pipeline_params_and_executor_are_checked_at_load(root: Path, extra: dict, message: str) -> None:
    """A list or string as params gave a bare ValueError; a misspelt executor failed only when the policy fired."""
    action = {"pipeline": "flows.py:train", **extra}
    with pytest.raises(ConfigError, match=r"loop.policies\[p\].then: pipeline 'flows.py:train': " + message):
        policies_from_config({"policies": [{"name": "p", "then": [action]}]}, root)



def test_run_pipeline_checks_params_and_executor_in_python_too() -> None:
    """The check lives in RunPipeline, so a policy written in Python is refused when it is declared as well."""
    from loopstack.pipelines import pipeline
    from loopstack.pipelines.policy import RunPipeline

    @pipeline
    def train() -> None:
        return None

    with pytest.raises(ConfigError, match=r"executor='proces' is not an executor"):
        RunPipeline(train, executor="proces")
    with pytest.raises(ConfigError, match=r"params=\['days', 30\] must be a mapping"):
        RunPipeline(train, params=["days", 30])  # type: ignore[arg-type]

def test_policies_of_one_name_are_refused_not_merged(root: Path) -> None:
    """The loader kept the last of two policies of one name, silently dropping the other."""
    twice = {"policies": [{"name": "p", "then": [{"pipeline": "flows.py:train"}]},
                          {"name": "p", "then": [{"hook": "flows.py:announce"}]}]}
    with pytest.raises(ConfigError, match=r"loop.policies.0 and loop.policies.1 are both named 'p'"):
        policies_from_config(twice, root)
    config = yaml.safe_load((root / "loopstack.yaml").read_text())
    config["loop"]["policies"][0]["name"] = "rollout"  # flows.py declares a Policy named rollout
    (root / "loopstack.yaml").write_text(yaml.safe_dump(config))
    with Project.open(root) as project, pytest.raises(
        ConfigError, match=r"policy 'rollout' is declared twice: in flows.py and in loopstack.yaml loop.policies"
    ):
        discover(project)


def test_loop_trigger_run_once_and_status(root: Path) -> None:
    invoke(loop, root, "run", "--once")  # first start: creates the trigger state
    assert "loop.manual" in invoke(loop, root, "trigger", "nightly", "--reason", "test")
    with pytest.raises(NotFoundError, match=r"no loop policy 'nigthly'; policies: .*Declare it under loop\.policies"):
        invoke(loop, root, "trigger", "nigthly")
    assert "stopped after 1 tick" in invoke(loop, root, "run", "--once")
    report = json.loads(invoke(loop, root, "status", "--json"))
    (run,) = report["runs"]
    assert run["policy"] == "nightly" and run["status"] == "finished" and run["step"] == 2
    assert run["results"]["announce"]["trained"] == run["results"]["train"]["pipeline_run"]
    nightly = [t for t in report["triggers"] if t["trigger"].startswith("schedule:")]
    assert time.gmtime(nightly[0]["next_fire"]).tm_hour == 3
    assert report["lease"] is None  # released on exit
    assert "nightly" in invoke(loop, root, "status")


def _kill_at_marker(code: str, marker: Path, cwd: Path, never: str) -> None:
    """Run `code` in a child process and kill -9 it (no cleanup) once it has written `marker`."""
    env = {**os.environ, "LOOPSTACK_TEST_MARKER": str(marker)}
    with subprocess.Popen([sys.executable, "-c", code], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, start_new_session=True) as child:
        try:
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
                assert time.monotonic() < deadline, never
                time.sleep(0.1)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()


@pytest.mark.slow
def test_a_killed_scheduler_resumes_its_action_on_restart(root: Path, tmp_path: Path) -> None:
    invoke(loop, root, "run", "--once")
    with Project.open(root) as project:
        project.events.emit("go", "now")
    code = f"from loopstack.pipelines.cli import loop; loop.main(['run'], obj={{'project_path': {str(root)!r}}})"
    _kill_at_marker(code, tmp_path / "marker", root, "the scheduler never reached the rollout")
    report = json.loads(invoke(loop, root, "status", "--json"))
    assert report["lease"] is not None and report["runs"][0]["status"] == "running"
    invoke(loop, root, "run", "--once")  # same host, dead pid: the lease is taken over at once
    report = json.loads(invoke(loop, root, "status", "--json"))
    run = report["runs"][0]
    assert run["status"] == "finished"
    assert run["results"]["slow_rollout"] == {"stage": 2, "resumed": True}
    with Project.open(root) as project:
        assert len(project.events.list(kind="pipeline.started")) == 1
        assert len(project.events.list(kind="loop.resumed")) == 1


def _usage_error(group: object, root: Path, *args: str) -> str:
    result = CliRunner().invoke(group, list(args), obj={"project_path": str(root)})
    assert result.exit_code == 2, result.output
    return result.output


def test_bad_parameters_and_counts_are_named(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"parameter 'n=\[1': '\[1' is not valid YAML"):
        CliRunner().invoke(pipelines, ["run", "train", "-p", "n=[1"], obj={"project_path": str(root)},
                           catch_exceptions=False)
    assert "-1 is not in the range x>=1" in _usage_error(pipelines, root, "run", "train", "-e", "process",
                                                         "--workers", "-1")
    assert "add --executor process" in _usage_error(pipelines, root, "run", "train", "--workers", "2")
    assert "0 is not in the range x>=1" in _usage_error(pipelines, root, "list", "--limit", "0")
    assert "0.0 is not in the range x>0" in _usage_error(loop, root, "run", "--poll", "0")
    assert "0 is not in the range x>=1" in _usage_error(loop, root, "run", "--max-ticks", "0")
    assert "--once is one tick" in _usage_error(loop, root, "run", "--once", "--max-ticks", "3")


def test_parsing_a_loop_section_twice_gives_the_same_triggers(root: Path) -> None:
    section = {"policies": [{"name": "x", "then": [{"hook": "flows.py:announce"}], "when": [
        {"performance": {"metric": "auc", "below": 0.8}},
        {"event": {"kind": "custom.signal", "where": {"score": [">", 3]}}}]}]}
    first, second = (policies_from_config(section, root)[0] for _ in range(2))
    assert [t.key for t in first.when] == [t.key for t in second.when]
    assert dict(second.when[1].where) == {"score": (">", 3)}


@pytest.mark.parametrize(("text", "value"), [
    ("1e-3", 0.001),  # YAML 1.1 read it as the text '1e-3'
    ("010", 10),  # as octal 8
    ("12:30", "12:30"),  # as 750 (base 60)
    ("-2", -2), ("0.5", 0.5), ("3.", 3.0), ("[1, 2]", [1, 2]), ("true", True), ("abc", "abc"), ("'7'", "7"),
])
def test_parameter_values_read_as_a_user_means_them(text: str, value: object) -> None:
    from loopstack.pipelines.cli import _parse_params

    parsed = _parse_params((f"x={text}",))["x"]
    assert parsed == value and type(parsed) is type(value)


HANGS = '''
import os
import time
from pathlib import Path

from loopstack.pipelines import pipeline, step


@step
def hangs(n: int) -> int:
    Path(os.environ["LOOPSTACK_TEST_MARKER"]).write_text("started")
    time.sleep(120)  # killed here
    return n


@pipeline
def stuck(n: int = 1):
    return hangs(n)
'''


@pytest.mark.slow
def test_a_pipeline_run_whose_process_was_killed_is_shown_failed(root: Path, tmp_path: Path) -> None:
    """Before, a run killed with kill -9 stayed "running" in `pipelines list` and `show` for good."""
    from loopstack.pipelines import get_run, list_runs

    (root / "hangs.py").write_text(HANGS)
    code = (f"from loopstack.pipelines.cli import pipelines; "
            f"pipelines.main(['run', 'hangs.py:stuck'], obj={{'project_path': {str(root)!r}}})")
    _kill_at_marker(code, tmp_path / "marker", root, "the pipeline never reached its step")
    with Project.open(root) as project:  # opening reaps the dead process's tracking run
        (run,) = list_runs(project, "stuck")
        assert run.status == "failed" and "process died" in (run.error or "")
        (step,) = get_run(project, run.id).steps
        assert step.status == "failed"
        (failed,) = project.events.list(kind="pipeline.failed")
        assert failed.payload["run_id"] == run.id and failed.cause == run.event_id
        assert list_runs(project, "stuck")[0].status == "failed"  # reaped once: no second event
        assert len(project.events.list(kind="pipeline.failed")) == 1


def test_yaml_pipeline_params_must_be_the_pipelines_parameters(root: Path) -> None:
    """`params: {dayz: 30}` passed the config check and failed only when the policy fired."""
    action = {"pipeline": "flows.py:train", "params": {"nn": 3}}
    with pytest.raises(ConfigError, match=r"loop.policies\[p\].then: pipeline 'flows.py:train': pipeline 'train' "
                                          r"has no parameter 'nn'; it takes: n: int = 4"):
        policies_from_config({"policies": [{"name": "p", "then": [action]}]}, root)
    config = yaml.safe_load((root / "loopstack.yaml").read_text())
    config["loop"]["policies"][0]["then"][0]["params"] = {"nn": 3}
    (root / "loopstack.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"has no parameter 'nn'"):  # the scheduler does not start
        CliRunner().invoke(loop, ["run", "--once"], obj={"project_path": str(root)}, catch_exceptions=False)


def test_run_pipeline_refuses_unknown_and_missing_parameters_when_declared() -> None:
    from loopstack.pipelines import pipeline
    from loopstack.pipelines.policy import Policy, RunPipeline

    @pipeline
    def fit(days: int, scale: float = 1.0) -> None:
        return None

    with pytest.raises(ConfigError, match=r"pipeline 'fit' has no parameters 'dayz', 'x'; "
                                          r"it takes: days: int, scale: float = 1.0"):
        RunPipeline(fit, params={"dayz": 30, "x": 1})
    with pytest.raises(ConfigError, match=r"pipeline 'fit' needs 'days' \(no default\)"):
        Policy("p", then=[fit])
    assert RunPipeline(fit, params={"days": 30}).params == {"days": 30}


def test_cli_parameters_are_converted_to_the_annotated_types_or_refused_in_one_line(root: Path) -> None:
    """`-p n=abc` went into `n: int` as text, and the step failed with a traceback."""
    from loopstack.pipelines import pipeline
    from loopstack.pipelines.cli import _typed_params

    @pipeline
    def typed(n: int = 1, ratio: float = 0.5, on: bool = False, tag: str = "", limit: int | None = None,
              anything: list | None = None) -> None:
        return None

    assert _typed_params(typed, ("n=1e3", "ratio=2", "on=true", "tag=007", "limit=null", "anything=[1]")) == {
        "n": 1000, "ratio": 2.0, "on": True, "tag": "007", "limit": None, "anything": [1]}
    assert type(_typed_params(typed, ("ratio=2",))["ratio"]) is float
    for item, message in [
        ("n=abc", r"parameter n='abc' is not an int: pipeline 'typed' declares n: int; pass e.g. -p n=30"),
        ("n=2.5", r"parameter n='2.5' is not an int"),
        ("n=true", r"parameter n='true' is not an int"),
        ("ratio=x", r"parameter ratio='x' is not a number: pipeline 'typed' declares ratio: float"),
        ("on=maybe", r"parameter on='maybe' is not true or false"),
        ("limit=ten", r"parameter limit='ten' is not an int \(or null\)"),
        ("nn=3", r"pipeline 'typed' has no parameter 'nn'; it takes: n: int = 1, ratio: float = 0.5"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _typed_params(typed, (item,))
    result = CliRunner().invoke(pipelines, ["run", "train", "-p", "n=abc"], obj={"project_path": str(root)})
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "Traceback" not in result.output and "making" not in result.output  # no step ran
    assert "making 10 numbers" in invoke(pipelines, root, "run", "train", "-p", "n=1e1")


def test_a_manual_trigger_inside_the_cooldown_says_it_will_be_suppressed(root: Path) -> None:
    """`loop trigger` said "run it now" while the scheduler recorded the trigger as loop.suppressed."""
    config = yaml.safe_load((root / "loopstack.yaml").read_text())
    config["loop"]["policies"][0]["cooldown_s"] = 3600
    (root / "loopstack.yaml").write_text(yaml.safe_dump(config))
    invoke(loop, root, "run", "--once")
    assert "to run it now" in invoke(loop, root, "trigger", "nightly")
    invoke(loop, root, "run", "--once")  # runs: no run before it
    said = " ".join(invoke(loop, root, "trigger", "nightly").split())
    assert "to run it now" not in said
    assert re.search(r"'nightly' is in its 3600s cooldown until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d .*"
                     r"records it as loop.suppressed and starts no run", said), said
    invoke(loop, root, "run", "--once")
    with Project.open(root) as project:
        assert len(project.events.list(kind="loop.suppressed")) == 1
        assert len(project.events.list(kind="loop.triggered")) == 1
    # `loop status` shows it too: it only listed runs, so a signal that started none left no trace there
    (row,) = json.loads(invoke(loop, root, "status", "--json"))["suppressed"]
    assert row["policy"] == "nightly" and "within the 3600s cooldown" in row["reason"]
    assert "within the 3600s cooldown" in " ".join(invoke(loop, root, "status").split())


def test_python_policies_of_one_name_in_two_definitions_files_are_refused(root: Path) -> None:
    """The second file's policy silently replaced the first's (only YAML against Python was checked)."""
    (root / "more.py").write_text("from loopstack.pipelines import Policy, OnEvent, Hook\n"
                                  "rollout = Policy('rollout', when=[OnEvent('other')], then=[Hook(print)])\n")
    config = yaml.safe_load((root / "loopstack.yaml").read_text())
    config["definitions"] = ["flows.py", "more.py"]
    (root / "loopstack.yaml").write_text(yaml.safe_dump(config))
    with Project.open(root) as project, pytest.raises(
        ConfigError, match=r"policy 'rollout' is declared twice: in flows.py and in more.py"
    ):
        discover(project)


class Killed(BaseException):
    """The scheduler dies mid-action: nothing in the engine catches it."""


def test_a_manual_trigger_during_a_run_says_it_will_be_suppressed(root: Path) -> None:
    """A request made during a run starts no run after it; `loop trigger` must say so, as it does for cooldown."""
    from loopstack.pipelines import Hook, Loop, Policy, trigger
    from loopstack.pipelines.state import runs

    def die(ctx: object) -> None:
        raise Killed

    with Project.open(root) as project:
        stuck = Loop(project, [Policy("nightly", then=[Hook(die, name="train")])])
        trigger(project, "nightly")
        with pytest.raises(Killed):
            stuck.tick()
        stuck.close()  # the run stays in flight, for the next scheduler to resume
        assert [r.status for r in runs(project)] == ["running"]
    said = " ".join(invoke(loop, root, "trigger", "nightly").split())
    assert "to run it now" not in said
    assert re.search(r"but run [0-9a-f]{12} of 'nightly' is in progress, started at \d{4}-\d\d-\d\d .*"
                     r"records this as loop.suppressed\. Trigger it again after the run ends", said), said
    invoke(loop, root, "run", "--once")  # resumes the run to its end, then suppresses the request
    with Project.open(root) as project:
        (suppressed,) = project.events.list(kind="loop.suppressed")
        assert "recorded during run" in suppressed.payload["reason"]
        assert [e.kind for e in project.events.list(kind="loop.", subject="nightly")].count("loop.finished") == 1
        assert len(project.events.list(kind="loop.triggered")) == 1


def test_yaml_policies_may_act_on_signals_during_runs(root: Path) -> None:
    (default,) = policies_from_config(LOOP, root)
    assert default.ignore_signals_during_run is True
    spec = LOOP["policies"][0]  # type: ignore[index]
    opted_out = {"policies": [{**spec, "ignore_signals_during_run": False}]}
    assert policies_from_config(opted_out, root)[0].ignore_signals_during_run is False
    with pytest.raises(ConfigError, match=r"loop.policies.0.ignore_signals_during_run.*'sometimes'"):
        policies_from_config({"policies": [{**spec, "ignore_signals_during_run": "sometimes"}]}, root)


def test_the_cooldown_reason_gives_the_run_start_as_a_date(root: Path) -> None:
    """It gave the start as seconds since 1970 (1795779633), which `loop status` showed as is."""
    config = yaml.safe_load((root / "loopstack.yaml").read_text())
    config["loop"]["policies"][0]["cooldown_s"] = 3600
    (root / "loopstack.yaml").write_text(yaml.safe_dump(config))
    invoke(loop, root, "run", "--once")
    invoke(loop, root, "trigger", "nightly")
    invoke(loop, root, "run", "--once")
    invoke(loop, root, "trigger", "nightly")
    invoke(loop, root, "run", "--once")
    (row,) = json.loads(invoke(loop, root, "status", "--json"))["suppressed"]
    assert re.search(r"cooldown after the run started at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", row["reason"]), row
