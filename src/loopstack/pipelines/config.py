"""The ``loop:`` section of loopstack.yaml: scheduler settings and policies declared as data.

::

    loop:
      poll_s: 5
      policies:
        - name: retrain-on-drift
          when:
            - drift: {monitor: transactions, share_above: 0.3}
            - performance: {metric: auc, below: 0.8}
            - quality_failed: {suite: transactions}
            - new_data: {view: card_stats, min_rows: 1000}
            - schedule: "0 3 * * *"          # or {cron: "0 3 * * *", timezone: Europe/Berlin}
            - event: {kind: custom.signal, subject: x, where: {score: [">", 3]}}
          then:
            - pipeline: pipelines.py:train    # file.py:name or package.module:name
              params: {days: 30}
              executor: process
            - hook: loop_hooks.py:gate         # a function of the ActionContext
          cooldown_s: 3600
          ignore_signals_during_run: true    # the default: a signal during a run starts none after it

Each entry becomes the same `Policy` a Python file would declare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from loopstack.core.errors import ConfigError, NotFoundError
from loopstack.pipelines import triggers
from loopstack.pipelines.policy import Hook, Policy, RunPipeline


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicySpec(_Model):
    """One policy in YAML."""

    name: str
    when: list[dict[str, Any]] = Field(default_factory=list)
    then: list[dict[str, Any]]
    cooldown_s: float = Field(0.0, ge=0)
    coalesce: bool = True
    ignore_signals_during_run: bool = True


class LoopSection(_Model):
    """The whole ``loop:`` section."""

    poll_s: float = Field(1.0, gt=0, le=3600)
    lease_ttl_s: float = Field(30.0, gt=0)
    policies: list[PolicySpec] = Field(default_factory=list)


def parse_section(data: dict[str, Any]) -> LoopSection:
    """Validate the ``loop:`` mapping, with errors that name the key path."""
    try:
        return LoopSection.model_validate(data or {})
    except PydanticValidationError as exc:
        lines = ["loopstack.yaml `loop:` is invalid:"]
        for error in exc.errors():
            path = ".".join(str(p) for p in error["loc"])
            lines.append(f"  loop.{path}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


def policies_from_config(data: dict[str, Any], root: Path) -> list[Policy]:
    """The policies declared in a ``loop:`` section."""
    section = parse_section(data)
    _refuse_duplicate_names(section.policies)
    return [_policy(spec, root) for spec in section.policies]


def _refuse_duplicate_names(specs: list[PolicySpec]) -> None:
    """Two policies of one name were merged by the loader, the last silently replacing the first."""
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.name in seen:
            raise ConfigError(
                f"loop.policies.{seen[spec.name]} and loop.policies.{index} are both named {spec.name!r}; "
                "a policy's name is its identity (its state and events), so rename one"
            )
        seen[spec.name] = index


def _policy(spec: PolicySpec, root: Path) -> Policy:
    where = f"loop.policies[{spec.name}]"
    when = [_trigger(item, where, root) for item in spec.when]
    then = [_action(item, root, where) for item in spec.then]
    return Policy(spec.name, when=when, then=then, cooldown_s=spec.cooldown_s, coalesce=spec.coalesce,
                  ignore_signals_during_run=spec.ignore_signals_during_run)


def _single(item: dict[str, Any], where: str, known: tuple[str, ...]) -> tuple[str, Any]:
    keys = [k for k in item if k in known]
    if len(keys) != 1:
        raise ConfigError(f"{where}: {item!r} needs exactly one of {', '.join(known)}")
    return keys[0], item[keys[0]]


_TRIGGERS = ("schedule", "drift", "performance", "quality_failed", "new_data", "event")


def _trigger(item: dict[str, Any], where: str, root: Path) -> triggers.Trigger:
    kind, value = _single(item, f"{where}.when", _TRIGGERS)
    _refuse_outer_keys(item, kind, value, where)
    if kind == "schedule":
        return _schedule(value, where)
    options = _options(kind, value, where)
    if kind == "performance":
        _require_metric_and_below(options, where)
    if kind == "event":
        options["where"] = _event_conditions(options.get("where", {}), where)
        if "predicate" in options:
            options["predicate"] = _predicate(options["predicate"], root, where)
    try:
        if kind == "drift":
            return triggers.drift_detected(**options)
        if kind == "performance":
            return triggers.performance_below(options.pop("metric"), options.pop("below"), **options)
        if kind == "quality_failed":
            return triggers.quality_failed(**options)
        if kind == "new_data":
            return triggers.new_data(**options)
        return triggers.OnEvent(**options)
    except TypeError as exc:
        raise ConfigError(f"{where}.when: {kind}: {value!r} has wrong keys ({exc})") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}.when: {kind}: {exc}") from None


def _refuse_outer_keys(item: dict[str, Any], kind: str, value: Any, where: str) -> None:
    """A key beside the trigger kind was dropped: ``share_above`` indented one level too far out made a
    plain drift trigger, and a typo like ``shedule`` vanished without a word."""
    extra = [key for key in item if key != kind]
    if not extra:
        return
    nested = {**(value if isinstance(value, dict) else {}), **{key: item[key] for key in extra}}
    shown = ", ".join(f"{key}: {option!r}" for key, option in nested.items())
    raise ConfigError(
        f"{where}.when: unknown key(s) {extra} beside {kind} in {item!r}; a trigger entry has one key, its kind. "
        f"Put options inside it ({kind}: {{{shown}}}) and give another trigger its own '- ' entry"
    )


def _predicate(reference: Any, root: Path, where: str) -> Any:
    """A predicate in YAML names a function (``file.py:name``); the bare string was kept and raised TypeError
    inside the scheduler's tick, at the first matching event."""
    from loopstack.pipelines.loader import load_reference

    if not isinstance(reference, str):
        raise ConfigError(
            f"{where}.when: event: predicate={reference!r} must name a function; write predicate: file.py:name"
        )
    try:
        target = load_reference(reference, root)
    except (ConfigError, NotFoundError) as exc:
        raise ConfigError(f"{where}.when: event: predicate {reference!r}: {exc}") from None
    if not callable(target):
        raise ConfigError(
            f"{where}.when: event: predicate {reference!r} is a {type(target).__name__}, not a function of the event"
        )
    return target


def _schedule(value: Any, where: str) -> triggers.Schedule:
    try:
        return triggers.Schedule(**value) if isinstance(value, dict) else triggers.Schedule(str(value))
    except TypeError as exc:
        raise ConfigError(f"{where}.when: schedule: {value!r} has wrong keys ({exc})") from None


_SUBJECT = {"drift": "monitor", "performance": "metric", "quality_failed": "suite", "new_data": "view", "event": "kind"}


def _options(kind: str, value: Any, where: str) -> dict[str, Any]:
    """A trigger's options as a copy (the pops below must not edit the project's config, which a second
    parse reads again). A plain value is refused: ``drift: transactions`` used to become a trigger for
    every monitor, its subject silently dropped. An empty entry (``quality_failed:``) means any subject."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}.when: {kind}: {value!r} must be a mapping of options; write {kind}: "
            f"{{{_SUBJECT[kind]}: {value!r}}}"
        )
    return dict(value)


def _require_metric_and_below(options: dict[str, Any], where: str) -> None:
    """Without ``below``, a performance trigger compared the metric with None and never fired."""
    missing = [key for key in ("metric", "below") if key not in options]
    if missing:
        raise ConfigError(
            f"{where}.when: performance: {options!r} lacks {' and '.join(missing)}; "
            "write performance: {metric: auc, below: 0.8}"
        )


def _event_conditions(conditions: Any, where: str) -> dict[str, Any]:
    if not isinstance(conditions, dict):
        raise ConfigError(
            f"{where}.when.event.where: {conditions!r} must be a mapping of payload path to value or "
            "[operator, value]; write where: {score: ['>', 3]}"
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in conditions.items()}


def _action(item: dict[str, Any], root: Path, where: str) -> Any:
    from loopstack.pipelines.dags import Pipeline
    from loopstack.pipelines.loader import load_reference

    kind, reference = _single(item, f"{where}.then", ("pipeline", "hook"))
    allowed = ("params", "executor", "name") if kind == "pipeline" else ("name",)  # a hook takes only the context
    extra = set(item) - {kind, *allowed}
    if extra:
        raise ConfigError(
            f"{where}.then: unknown keys {sorted(extra)} in {item!r}; a {kind} allows: {', '.join(allowed)}"
        )
    target = load_reference(str(reference), root)
    if kind == "pipeline":
        if not isinstance(target, Pipeline):
            raise ConfigError(f"{where}.then: {reference!r} is a {type(target).__name__}, not a @pipeline")
        try:  # RunPipeline checks params and executor; the YAML says where they were written
            return RunPipeline(target, params=item.get("params"), executor=item.get("executor"), name=item.get("name"))
        except ConfigError as exc:
            raise ConfigError(f"{where}.then: pipeline {item['pipeline']!r}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"{where}.then: hook {reference!r} is not callable")
    return Hook(target, name=item.get("name"))


__all__ = ["LoopSection", "PolicySpec", "parse_section", "policies_from_config"]
