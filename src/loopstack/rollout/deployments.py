"""Deployments in the metadata DB: create, change, read; every change is a new version and an event.

A change reads the row, builds the new `Deployment`, writes it with
``version + 1`` and records the event in the same transaction, so the table
and the event log never disagree. Two writers racing on one endpoint are
serialised by the row lock (PostgreSQL) or the write lock (SQLite). Model
references are pinned to a version when they enter a deployment
(``fraud@champion`` -> ``fraud/3``), so moving an alias later does not move
traffic behind the deployment's back.

Event kinds (subject = endpoint): ``deployment.created``, ``deployment.changed``
(blue-green, canary, A/B, shadow and bandit starts), ``rollout.canary.step``,
``rollout.promoted``, ``rollout.rolled_back``, ``deployment.deleted``. Each
payload holds the new version, variants, weights and the ``reason`` (and
``retired``, the variants a change unloaded: a rolled-back challenger); the
``cause`` column points at the event that triggered it, when there is one, and
``Deployments.last_event`` at the latest change's event, so a caller can chain on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConflictError, NotFoundError, ValidationError
from loopstack.rollout.deployment import DEFAULT_GUARDRAILS, Deployment, normalize_steps

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from loopstack.core.project import Project

Change = Callable[[Deployment], Deployment]
Decided = tuple[str, dict[str, Any]]  # a controller's decision event (kind, payload), recorded with its change
_EXPERIMENTS = ("canary", "ab", "shadow", "bandit")


class Deployments:
    """Create and change the deployments of a project (also ``project.deployments``).

    Examples
    --------
    >>> import tempfile
    >>> import loopstack as ls
    >>> from sklearn.dummy import DummyClassifier
    >>> project = ls.Project.init(tempfile.mkdtemp(), name="doc")
    >>> model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    >>> for _ in range(2):
    ...     with ls.start_run(project=project) as run:
    ...         _ = run.log_model(model, "model")
    ...     _ = ls.register_model(run.id, "model", name="fraud", project=project)
    >>> deployments = Deployments(project)
    >>> deployments.create("fraud-api", "fraud/1").weights
    {'fraud/1': 1.0}
    >>> deployments.canary("fraud-api", "fraud/2", steps=[10, 50, 100]).weights
    {'fraud/1': 0.9, 'fraud/2': 0.1}
    >>> d = deployments.rollback("fraud-api", reason="looked wrong")
    >>> d.strategy, d.weights, d.version
    ('single', {'fraud/1': 1.0}, 3)
    >>> [e.kind for e in project.events.list(subject="fraud-api", newest_first=False)]
    ['deployment.created', 'deployment.changed', 'rollout.rolled_back']
    >>> project.close()
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self.db = project.db
        self.table = project.db.table("deployments")
        self.last_event: int | None = None  # the event of this object's latest change, to chain the next one to
        self.last_decision: int | None = None  # the decision event recorded with the latest change given one

    # -- reading ------------------------------------------------------------------------------
    def get(self, endpoint: str) -> Deployment:
        """The deployment of `endpoint`; NotFoundError names the known ones."""
        from sqlalchemy import select

        with self.db.read() as connection:
            row = connection.execute(select(self.table).where(self.table.c.endpoint == endpoint)).mappings().first()
        if row is None:
            raise NotFoundError(f"no deployment {endpoint!r}; known: {self.names()}. Create it with "
                                f"deployments.create({endpoint!r}, 'model/1') or `loopstack deploy create`")
        return Deployment.from_row(row)

    def list(self) -> list[Deployment]:
        """Every deployment, by endpoint name."""
        from sqlalchemy import select

        with self.db.read() as connection:
            rows = connection.execute(select(self.table).order_by(self.table.c.endpoint)).mappings().all()
        return [Deployment.from_row(r) for r in rows]

    def names(self) -> list[str]:
        from sqlalchemy import select

        with self.db.read() as connection:
            return list(connection.execute(select(self.table.c.endpoint).order_by(self.table.c.endpoint)).scalars())

    def versions(self) -> dict[str, int]:
        """``endpoint -> version`` for every deployment: what a server polls to notice changes."""
        from sqlalchemy import select

        with self.db.read() as connection:
            rows = connection.execute(select(self.table.c.endpoint, self.table.c.version))
            return {row.endpoint: row.version for row in rows}

    # -- creating -----------------------------------------------------------------------------
    def create(self, endpoint: str, champion: str, *, name: str | None = None, primary_metric: str | None = None,
               higher_is_better: bool | None = None, guardrails: Sequence[str] = DEFAULT_GUARDRAILS,
               reason: str = "manual", cause: int | None = None) -> Deployment:
        """A new endpoint serving one model (`champion`, a registry reference) to all traffic.

        `primary_metric` judges a canary: a scoring rule of the prediction against the feedback
        label (``brier``, ``log_loss``, ``accuracy``, ``squared_error``, ``absolute_error``;
        `loopstack.rollout.rewards`), or any other name for the feedback's own value
        (``conversion``). `higher_is_better` defaults to the rule's direction, else to True.
        """
        from loopstack.rollout.rewards import higher_is_better as direction

        higher_is_better = direction(primary_metric, higher_is_better)
        ref = self._pin(champion)
        variant = name or ref
        now = time.time()
        d = Deployment(endpoint, "single", {variant: ref}, variant, {variant: 1.0}, salt=_salt(endpoint),
                       primary_metric=primary_metric, higher_is_better=higher_is_better, guardrails=tuple(guardrails),
                       version=1, created_at=now, updated_at=now)
        with self.db.write() as connection:
            if self._row(connection, endpoint) is not None:
                raise ConflictError(f"deployment {endpoint!r} already exists; change it (canary, blue_green, ...) "
                                    f"or delete it first (`loopstack deploy delete {endpoint}`)")
            self._still_registered(connection, {ref})
            connection.execute(self.table.insert().values(
                endpoint=endpoint, version=1, strategy=d.strategy, config=d.config(), state={},
                created_at=now, updated_at=now))
            event = self._emit(connection, "deployment.created", d, reason, cause)
        self.last_event = event
        return d

    def delete(self, endpoint: str, *, reason: str = "manual", cause: int | None = None) -> None:
        """Remove the deployment; servers stop serving the endpoint at their next poll."""
        with self.db.write() as connection:
            d = self._load(connection, endpoint)
            connection.execute(self.table.delete().where(self.table.c.endpoint == endpoint))
            event = self._emit(connection, "deployment.deleted", d, reason, cause)
        self.last_event = event

    # -- strategies ---------------------------------------------------------------------------
    def blue_green(self, endpoint: str, new: str, *, name: str | None = None, reason: str = "manual",
                   cause: int | None = None) -> Deployment:
        """Switch all traffic to `new` at once; the old champion stays loaded for an instant `rollback`."""
        ref = self._pin(new)
        variant = name or ref

        def change(d: Deployment) -> Deployment:
            _no_experiment(d, "blue_green")
            _distinct(d, variant)
            old = d.champion
            return replace(d, strategy="blue_green", variants={old: d.variants[old], variant: ref}, champion=variant,
                           previous=old, challenger=None, shadow=(), weights={variant: 1.0, old: 0.0})

        return self._change(endpoint, "deployment.changed", change, reason, cause)

    def canary(self, endpoint: str, challenger: str, *, name: str | None = None,
               steps: Sequence[float] = (1, 5, 25, 50, 100), min_requests_per_step: int = 1000,
               alpha: float = 0.05, salt: str | None = None, reason: str = "manual", cause: int | None = None,
               **policy: Any) -> Deployment:
        """Send a growing share of traffic to `challenger`, step by step, guarded by `RolloutController`.

        `steps` are percentages (or fractions); promotion follows the last one.
        Extra keyword arguments go to `CanaryPolicy` (``planned_n``, ``error_margin``,
        ``require_non_inferiority``, ``max_canary_requests``, ``max_hold_evaluations``, ...); they are
        checked against the guardrails this deployment's canary runs (a margin for each under
        ``require_non_inferiority=True``).
        A running shadow of the same model turns into the canary.
        """
        fractions = normalize_steps(steps)
        ref = self._pin(challenger)
        settings = {"min_requests_per_step": int(min_requests_per_step), "alpha": float(alpha), **policy}

        def change(d: Deployment) -> Deployment:
            if settings.get("min_labels_per_step") and d.primary_metric is None:
                raise ValidationError(f"min_labels_per_step={settings['min_labels_per_step']} waits for labels of a "
                                      f"primary metric, and deployment {endpoint!r} has none; create it with "
                                      "primary_metric=... or leave min_labels_per_step at 0")
            variant = _existing(d, ref, name)
            _no_experiment(d, "canary", allow=("shadow",))
            _distinct(d, variant)
            w = fractions[0]
            started = replace(d, strategy="canary", variants=_keep(d, variant, ref), challenger=variant, shadow=(),
                              steps=fractions, step=0, policy=settings, salt=salt or _salt(endpoint),
                              weights={d.champion: 1 - w, variant: w})
            _check_policy(started)  # with this deployment's guardrails: non-inferiority needs each one's margin
            return started

        return self._change(endpoint, "deployment.changed", change, reason, cause,
                            state={"started_at": time.time()}, starts=True)

    def ab(self, endpoint: str, variants: Mapping[str, str] | Sequence[str], weights: Sequence[float] | None = None,
           *, salt: str | None = None, reason: str = "manual", cause: int | None = None) -> Deployment:
        """A/B test: sticky assignment of units to `variants` (control first) by GrowthBook hashing."""
        named = dict(variants) if isinstance(variants, Mapping) else {self._pin(r): r for r in variants}
        pinned = {n: self._pin(r) for n, r in named.items()}
        shares = [float(w) for w in weights] if weights is not None else [1 / len(pinned)] * len(pinned)
        if len(pinned) < 2 or len(shares) != len(pinned) or abs(sum(shares) - 1) > 1e-6:
            raise ValidationError(f"an A/B test needs >= 2 variants and one weight each summing to 1, got "
                                  f"{list(pinned)} with weights {shares}")

        def change(d: Deployment) -> Deployment:
            _no_experiment(d, "ab")
            control = next(iter(pinned))
            return replace(d, strategy="ab", variants=pinned, champion=control, challenger=None, previous=None,
                           shadow=(), salt=salt or _salt(endpoint), weights=dict(zip(pinned, shares, strict=True)))

        return self._change(endpoint, "deployment.changed", change, reason, cause,
                            state={"started_at": time.time()}, starts=True)

    def shadow(self, endpoint: str, challenger: str, *, name: str | None = None, reason: str = "manual",
               cause: int | None = None) -> Deployment:
        """Mirror every request to `challenger`; callers keep getting the champion's answer."""
        ref = self._pin(challenger)

        def change(d: Deployment) -> Deployment:
            variant = _existing(d, ref, name)
            _no_experiment(d, "shadow")
            _distinct(d, variant)
            return replace(d, strategy="shadow", variants=_keep(d, variant, ref), challenger=variant,
                           shadow=(variant,), weights={d.champion: 1.0, variant: 0.0})

        return self._change(endpoint, "deployment.changed", change, reason, cause,
                            state={"started_at": time.time()}, starts=True)

    def bandit(self, endpoint: str, variants: Mapping[str, str] | Sequence[str], *, min_share: float = 0.05,
               model: str = "bernoulli", reason: str = "manual", cause: int | None = None) -> Deployment:
        """Thompson sampling over `variants` on the feedback reward, each keeping at least `min_share`."""
        from loopstack.rollout.bandit import ThompsonBandit

        named = dict(variants) if isinstance(variants, Mapping) else {self._pin(r): r for r in variants}
        pinned = {n: self._pin(r) for n, r in named.items()}
        bandit = ThompsonBandit(list(pinned), min_share=min_share, model=model)  # validates

        def change(d: Deployment) -> Deployment:
            _no_experiment(d, "bandit")
            share = bandit.allocation()
            return replace(d, strategy="bandit", variants=pinned, champion=next(iter(pinned)), challenger=None,
                           previous=None, shadow=(), policy={"min_share": min_share, "model": model},
                           weights=_normalized(share))

        return self._change(endpoint, "deployment.changed", change, reason, cause,
                            state={"started_at": time.time(), "bandit": bandit.state}, starts=True)

    # -- ending -------------------------------------------------------------------------------
    def promote(self, endpoint: str, variant: str | None = None, *, reason: str = "manual", cause: int | None = None,
                evidence: Any = None, expected_version: int | None = None,
                state: dict[str, Any] | None = None, decision: Decided | None = None) -> Deployment:
        """Make `variant` (default: the challenger, or an A/B/bandit's best-weighted arm) the only live variant."""

        def change(d: Deployment) -> Deployment:
            chosen = variant or d.challenger or max(d.weights, key=lambda v: d.weights[v])
            if chosen not in d.variants:
                raise NotFoundError(f"deployment {endpoint!r} has no variant {chosen!r}; "
                                    f"variants: {sorted(d.variants)}")
            if d.strategy == "single" and chosen == d.champion:  # would record a promotion that changed nothing
                raise ConflictError(f"deployment {endpoint!r} already serves only {chosen!r}: nothing to promote; "
                                    "start a canary, shadow or A/B test first")
            old = d.champion if d.champion != chosen else d.previous
            kept = {n: d.variants[n] for n in (old, chosen) if n}
            return replace(d, strategy="single", variants=kept, champion=chosen, previous=old, challenger=None,
                           shadow=(), steps=(), step=0, weights={n: 1.0 if n == chosen else 0.0 for n in kept})

        return self._change(endpoint, "rollout.promoted", change, reason, cause, expected_version, state,
                            extra={"evidence": evidence}, decision=decision)

    def rollback(self, endpoint: str, *, reason: str = "manual", cause: int | None = None, evidence: Any = None,
                 expected_version: int | None = None, state: dict[str, Any] | None = None,
                 decision: Decided | None = None) -> Deployment:
        """Back to the stable variant at once: end a canary/shadow/A-B/bandit, or undo a blue-green switch."""

        def change(d: Deployment) -> Deployment:
            if d.strategy in _EXPERIMENTS:  # the challenger leaves; an older champion stays loaded
                back, dropped = d.champion, d.previous if d.previous in d.variants else None
            elif d.previous is not None:
                back, dropped = d.previous, d.champion
            else:
                raise ConflictError(f"deployment {endpoint!r} has nothing to roll back to: it serves only "
                                    f"{d.champion!r}; deploy another version first")
            kept = {n: d.variants[n] for n in (back, dropped) if n}
            return replace(d, strategy="single", variants=kept, champion=back, previous=dropped, challenger=None,
                           shadow=(), steps=(), step=0, weights={n: 1.0 if n == back else 0.0 for n in kept})

        return self._change(endpoint, "rollout.rolled_back", change, reason, cause, expected_version, state,
                            extra={"evidence": evidence}, decision=decision)

    def set_step(self, endpoint: str, step: int, *, expected_version: int | None = None, reason: str = "manual",
                 cause: int | None = None, evidence: Any = None, state: dict[str, Any] | None = None,
                 decision: Decided | None = None) -> Deployment:
        """Move a canary to `step` (the controller calls this when a step passes)."""

        def change(d: Deployment) -> Deployment:
            if d.strategy != "canary" or d.challenger is None:
                raise ConflictError(f"deployment {endpoint!r} runs no canary (strategy {d.strategy!r})")
            if not 0 <= step < len(d.steps):
                raise ValidationError(f"canary step {step} is out of range 0..{len(d.steps) - 1}")
            w = d.steps[step]
            return replace(d, step=step, weights={d.champion: 1 - w, d.challenger: w})

        return self._change(endpoint, "rollout.canary.step", change, reason, cause, expected_version, state,
                            extra={"evidence": evidence}, decision=decision)

    def save_state(self, endpoint: str, state: dict[str, Any], *, expected_version: int | None = None,
                   cause: int | None = None, decision: Decided | None = None) -> None:
        """Store the controller's working state; moves no traffic and leaves the version alone."""
        with self.db.write() as connection:
            d = self._load(connection, endpoint)
            _expect(d, expected_version)
            recorded, state = self._record_decision(connection, endpoint, decision, cause, state)
            connection.execute(self.table.update().where(self.table.c.endpoint == endpoint).values(state=state))
        self.last_decision = recorded

    def set_weights(self, endpoint: str, weights: Mapping[str, float], *, state: dict[str, Any] | None = None,
                    reason: str = "manual", cause: int | None = None, expected_version: int | None = None,
                    decision: Decided | None = None) -> Deployment:
        """New live weights for the current variants (a bandit's re-allocation)."""
        return self._change(endpoint, "deployment.changed", lambda d: replace(d, weights=_normalized(weights)),
                            reason, cause, expected_version, state, decision=decision)

    # -- internals ----------------------------------------------------------------------------
    def _change(self, endpoint: str, kind: str, change: Change, reason: str, cause: int | None,
                expected_version: int | None = None, state: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None, decision: Decided | None = None,
                starts: bool = False) -> Deployment:
        """Apply `change` and record it; a change that `starts` a rollout keeps its event id in the state as
        ``started_by``, so the controller's decisions point back at it (`loopstack events --chain`)."""
        with self.db.write() as connection:
            old = self._load(connection, endpoint)
            _expect(old, expected_version)
            recorded, state = self._record_decision(connection, endpoint, decision, cause, state)
            cause = recorded if recorded is not None else cause
            new = replace(change(old), version=old.version + 1, updated_at=time.time(),
                          state=old.state if state is None else state)
            self._still_registered(connection, set(new.variants.values()) - set(old.variants.values()))
            connection.execute(self.table.update().where(self.table.c.endpoint == endpoint).values(
                version=new.version, strategy=new.strategy, config=new.config(), state=new.state,
                updated_at=new.updated_at))
            details = {"from_version": old.version, **(extra or {})}
            retired = sorted(set(old.variants) - set(new.variants))
            if retired:
                details["retired"] = retired
            event = self._emit(connection, kind, new, reason, cause, details)
            if starts:
                new = replace(new, state={**new.state, "started_by": event})
                connection.execute(self.table.update().where(self.table.c.endpoint == endpoint).values(
                    state=new.state))
        self.last_event, self.last_decision = event, recorded
        return new

    def _record_decision(self, connection: Connection, endpoint: str, decision: Decided | None, cause: int | None,
                         state: dict[str, Any] | None) -> tuple[int | None, dict[str, Any] | None]:
        """Record a controller's decision in the transaction of the change it causes, so a change refused
        (the deployment moved meanwhile) leaves no decision behind; the state keeps it as ``last_event``."""
        if decision is None:
            return None, state
        kind, payload = decision
        recorded = self.project.events.emit(kind, endpoint, payload, cause=cause, connection=connection)
        return recorded, None if state is None else {**state, "last_event": recorded}

    def _emit(self, connection: Connection, kind: str, d: Deployment, reason: str, cause: int | None,
              extra: dict[str, Any] | None = None) -> int:
        payload = {**d.to_dict(), "reason": reason, **{k: v for k, v in (extra or {}).items() if v is not None}}
        return self.project.events.emit(kind, d.endpoint, payload, cause=cause, connection=connection)

    def _row(self, connection: Connection, endpoint: str) -> Any:
        from sqlalchemy import select

        query = select(self.table).where(self.table.c.endpoint == endpoint)
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        return connection.execute(query).mappings().first()

    def _load(self, connection: Connection, endpoint: str) -> Deployment:
        row = self._row(connection, endpoint)
        if row is None:
            raise NotFoundError(f"no deployment {endpoint!r}; create it with deployments.create({endpoint!r}, "
                                "'model/1') or `loopstack deploy create`")
        return Deployment.from_row(row)

    def _still_registered(self, connection: Connection, refs: set[str]) -> None:
        """Check, in the deployment's write transaction, that the versions it starts serving still exist.

        `_pin` read them before the transaction; a delete committed in between would leave the
        deployment serving a version that is gone. The model's row is locked as the delete locks it.
        """
        from loopstack.registry import queries

        models, versions = self.db.table("registered_models"), self.db.table("model_versions")
        for ref in sorted(refs):
            name, _, number = ref.rpartition("/")
            if not queries.lock_model(connection, models, name) or int(number) not in queries.version_numbers(
                    connection, versions, name):
                raise ConflictError(f"model version {ref} was deleted from the registry meanwhile; deploy another "
                                    "version")

    def _pin(self, ref: str) -> str:
        """``fraud@champion`` -> ``fraud/3``: a deployment names exact versions."""
        version = self.project.registry.get_model_version(ref)
        return f"{version.name}/{version.version}"


def _salt(endpoint: str) -> str:
    return f"{endpoint}-{uuid.uuid4().hex[:8]}"


def _expect(d: Deployment, expected_version: int | None) -> None:
    if expected_version is not None and d.version != expected_version:
        raise ConflictError(f"deployment {d.endpoint!r} changed meanwhile (version {d.version}, expected "
                            f"{expected_version}); re-read it and decide again")


# strategies in words: "running a ab" and "starting a blue_green" read as typos
_IN_WORDS = {"canary": "a canary", "ab": "an A/B test", "shadow": "a shadow deployment", "bandit": "a bandit",
             "blue_green": "a blue-green switch"}


def _no_experiment(d: Deployment, starting: str, allow: tuple[str, ...] = ()) -> None:
    if d.strategy in _EXPERIMENTS and d.strategy not in allow:
        running = _IN_WORDS.get(d.strategy, f"a {d.strategy}")
        raise ConflictError(f"deployment {d.endpoint!r} is running {running}; promote or roll it back "
                            f"before starting {_IN_WORDS.get(starting, f'a {starting}')}")


def _distinct(d: Deployment, variant: str) -> None:
    if variant == d.champion:
        raise ValidationError(f"{variant!r} is already the champion of {d.endpoint!r}; deploy another version")


def _existing(d: Deployment, ref: str, name: str | None) -> str:
    """Reuse the variant already serving `ref` (a shadow turning into a canary) unless a name is given."""
    if name:
        return name
    return next((n for n, r in d.variants.items() if r == ref), ref)


def _keep(d: Deployment, variant: str, ref: str) -> dict[str, str]:
    """The champion, the new variant, and the previous champion while it is still loaded."""
    kept = {d.champion: d.variants[d.champion], variant: ref}
    if d.previous and d.previous not in kept:
        kept[d.previous] = d.variants[d.previous]
    return kept


def _normalized(weights: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValidationError(f"weights {dict(weights)} must have a positive sum")
    return {k: float(v) / total for k, v in weights.items()}


def _check_policy(d: Deployment) -> None:
    """Refuse a canary whose settings its controller would refuse at the first tick."""
    from loopstack.rollout.controller import canary_policy

    try:
        canary_policy(d)
    except TypeError as error:
        raise ValidationError(f"unknown canary setting: {error}; see CanaryPolicy for the accepted ones") from None


__all__ = ["Deployments"]
