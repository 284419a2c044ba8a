"""The registry on both metadata backends: versions, snapshots, lineage, aliases, lookups."""

from __future__ import annotations

import numpy as np
import pytest

import loopstack as ls
from loopstack import registry


def double(x):
    return np.asarray(x) * 2


@pytest.fixture
def run_id(project, log_in_run):
    """A finished run that logged `double` with a signature."""
    run_id, _ = log_in_run(project, double, np.ones((2, 3)))
    return run_id


def test_versions_count_up_per_model(project, run_id):
    reg = project.registry
    assert [reg.register_model(run_id, name="fraud").version for _ in range(3)] == [1, 2, 3]
    assert reg.register_model(run_id, name="churn").version == 1
    assert [v.ref for v in reg.search_model_versions("fraud")] == ["fraud/3", "fraud/2", "fraud/1"]
    assert reg.get_model_version("fraud").version == 3  # a bare name is the newest version
    assert reg.get_model_version("fraud@latest").version == 3
    assert reg.get_model_version("fraud", 2).version == 2


def test_version_records_signature_metrics_and_lineage(project):
    with ls.start_run(project=project) as run:
        run.log_metric("auc", 0.5, step=0)
        run.log_metric("auc", 0.93, step=1)
        run.log_metric("loss", float("nan"))
        digest = run.log_input(np.arange(12).reshape(6, 2), name="train.parquet")
        run.set_tag("loopstack.git.commit", "0123abcd")
        run.log_model(double, "model", example=np.ones((2, 3)))
    version = ls.register_model(run.id, "model", name="fraud", project=project)
    assert version.run_id == run.id and version.flavor == "python"
    assert version.metrics["auc"] == 0.93  # the latest value, not the history
    assert version.metrics["loss"] is None  # NaN is stored as null (PostgreSQL JSON refuses NaN)
    assert version.lineage["git_commit"] == "0123abcd"
    assert version.lineage["run_id"] == run.id
    assert [(d["digest"], d["name"], d["rows"]) for d in version.lineage["datasets"]] == [(digest, "train.parquet", 6)]
    assert version.signature.inputs.shape == (-1, 3)
    assert version.digest == project.tracking.artifact_digest(run.id, "model")


def test_registration_and_alias_moves_are_events(project, run_id):
    reg = project.registry
    reg.register_model(run_id, name="fraud", alias="champion")
    reg.register_model(run_id, name="fraud", alias="challenger")
    moved = reg.set_alias("fraud", "champion", 2)
    assert moved.version == 2 and moved.aliases == ("challenger", "champion")
    reg.set_alias("fraud", "champion", 2)  # no change: no event
    events = project.events.list(subject="fraud", newest_first=False)
    kinds = [(e.kind, e.payload.get("alias"), e.payload.get("from"), e.payload.get("to")) for e in events]
    assert kinds == [
        ("model.registered", None, None, None),
        ("model.alias_moved", "champion", None, 1),
        ("model.registered", None, None, None),
        ("model.alias_moved", "challenger", None, 2),
        ("model.alias_moved", "champion", 1, 2),
    ]
    registered = events[0]
    assert registered.payload["version"] == 1 and registered.payload["run_id"] == run_id
    assert project.events.chain(registered.id)[0].subject == run_id  # caused by the run's last event
    assert events[1].cause == registered.id


def test_alias_resolution_and_delete(project, run_id):
    reg = project.registry
    reg.register_model(run_id, name="fraud")
    reg.register_model(run_id, name="fraud", alias="champion")
    assert ls.load_model("fraud@champion", project=project).version == 2
    reg.set_alias("fraud", "champion", 1)
    assert ls.load_model("fraud@champion", project=project).version == 1
    reg.delete_alias("fraud", "champion")
    assert reg.get_model_version("fraud/1").aliases == ()
    with pytest.raises(ls.NotFoundError, match="no alias 'champion'; its aliases: none"):
        reg.get_model_version("fraud@champion")
    assert project.events.list(kind="model.alias_deleted")[0].payload == {"alias": "champion", "from": 1}
    with pytest.raises(ls.NotFoundError):
        reg.delete_alias("fraud", "champion")


def test_unknown_names_list_what_exists(project, run_id):
    reg = project.registry
    reg.register_model(run_id, name="fraud", alias="champion")
    reg.register_model(run_id, name="churn")
    with pytest.raises(ls.NotFoundError, match=r"no model named 'frud'; registered models: churn, fraud"):
        ls.load_model("frud", project=project)
    with pytest.raises(ls.NotFoundError, match=r"no version 7; its versions: 1"):
        reg.get_model_version("fraud/7")
    with pytest.raises(ls.NotFoundError, match=r"no alias 'staging'; its aliases: champion->1"):
        reg.get_model_version("fraud@staging")
    with pytest.raises(ls.NotFoundError, match="its versions: 1"):
        reg.set_alias("fraud", "champion", 3)
    with pytest.raises(ls.NotFoundError, match="no model named 'nope'"):
        reg.search_model_versions("nope")
    with pytest.raises(ls.NotFoundError, match="no run with id"):
        reg.register_model("f" * 32, name="fraud")
    with pytest.raises(ls.NotFoundError, match=r"has no model at 'other'; its models: \['model'\]"):
        reg.register_model(run_id, "other", name="fraud")


def test_loading_a_model_of_a_run_that_does_not_exist_says_so(project, run_id):
    """`runs:/abc/model` said "run abc has no model at 'model'; its models: none" for a run that is not there."""
    with pytest.raises(ls.NotFoundError, match=r"no run with id 'abc'; list runs with `loopstack runs`"):
        ls.load_model("runs:/abc/model", project=project)
    with ls.start_run(project=project) as empty:  # a run that exists but logged no model still says that
        pass
    with pytest.raises(ls.NotFoundError, match=rf"run {empty.id} has no model at 'model'; its models: none"):
        ls.load_model(f"runs:/{empty.id}/model", project=project)
    with pytest.raises(ls.NotFoundError, match=r"has no model at 'other'; its models: \['model'\]"):
        ls.load_model(f"runs:/{run_id}/other", project=project)


def test_invalid_names_are_refused_before_anything_is_written(project, run_id):
    reg = project.registry
    with pytest.raises(ls.ValidationError, match="invalid model name 'fraud/3'"):
        reg.register_model(run_id, name="fraud/3")
    with pytest.raises(ls.ValidationError, match="alias 'latest' is reserved"):
        reg.register_model(run_id, name="fraud", alias="latest")
    assert reg.list_models() == []
    reg.register_model(run_id, name="fraud")
    with pytest.raises(ls.ValidationError, match="invalid alias 'a b'"):
        reg.set_alias("fraud", "a b", 1)
    assert reg.list_models()[0].aliases == {}


@pytest.mark.parametrize("ref", [None, 3, b"fraud"])
def test_a_reference_that_is_not_text_is_a_validation_error(sqlite_project, ref):
    with pytest.raises(ls.ValidationError, match="invalid model reference"):
        ls.load_model(ref, project=sqlite_project)


def test_registering_a_plain_file_artifact_is_refused(project):
    with ls.start_run(project=project) as run:
        run.log_dict({"a": 1}, "config.json")
    with pytest.raises(ls.ValidationError, match=r"'config.json' of run .* is a file, not a model"):
        ls.register_model(run.id, "config.json", name="fraud", project=project)


def test_list_and_search_across_models(project, run_id, log_in_run):
    other_run, _ = log_in_run(project, double, np.ones((2, 3)))
    reg = project.registry
    reg.register_model(run_id, name="fraud", alias="champion")
    reg.register_model(other_run, name="fraud", alias="challenger")
    reg.register_model(other_run, name="churn")
    models = {m.name: (m.latest_version, m.aliases) for m in registry.list_models(project=project)}
    assert models == {"churn": (1, {}), "fraud": (2, {"challenger": 2, "champion": 1})}
    assert [v.ref for v in registry.search_model_versions(project=project)] == ["churn/1", "fraud/2", "fraud/1"]
    assert [v.ref for v in registry.search_model_versions(run_id=other_run, project=project)] == ["churn/1", "fraud/2"]


def test_fluent_api_uses_the_current_project(project, run_id):
    version = ls.register_model(run_id, name="fraud", alias="champion")
    assert ls.set_alias("fraud", "backup", version.version).aliases == ("backup", "champion")
    assert registry.get_model_version("fraud@backup").version == 1
    registry.delete_alias("fraud", "backup")
    model = ls.load_model("fraud@champion")
    np.testing.assert_array_equal(model.predict(np.ones((1, 3))), [[2.0, 2.0, 2.0]])
    with pytest.raises(ls.SignatureError, match="expected size 3, got 2"):
        model.predict(np.ones((1, 2)))


def test_a_model_keeps_the_features_it_was_logged_with(project):
    with ls.start_run(project=project) as run:
        run.log_model(double, "plain", example=np.ones((2, 3)))
        run.log_model(double, "refs", example=np.ones((2, 3)), features=["driver_stats:trips", "driver_stats:rate"])
        run.log_model(double, "service", example=np.ones((2, 3)), features="eta_features")
        for bad in ([], ["trips"], ["a:b:c"], [":trips"], "  ", [3]):
            with pytest.raises(ls.ValidationError, match="view_name:feature_name" if bad != "  " else "service"):
                run.log_model(double, "bad", example=np.ones((2, 3)), features=bad)
    for path, expected in (("plain", None), ("refs", ("driver_stats:trips", "driver_stats:rate")),
                           ("service", "eta_features")):
        ls.register_model(run.id, path, name=path, project=project)
        assert ls.load_model(f"{path}/1", project=project).features == expected
    assert [a["path"] for a in ls.Client(project).list_artifacts(run.id) if a["path"] == "bad"] == []  # not stored


def test_deleting_a_version_keeps_its_number_retired_and_records_an_event(project, run_id):
    reg = project.registry
    for _ in range(3):
        reg.register_model(run_id, name="fraud")
    reg.delete_model_version("fraud", 3)  # the newest: its number must not come back
    assert [v.version for v in reg.search_model_versions("fraud")] == [2, 1]
    assert reg.register_model(run_id, name="fraud").version == 4  # was 3 again: "fraud/3" named two models
    reg.delete_model_version("fraud", 1)
    with pytest.raises(ls.NotFoundError, match=r"has no version 1; its versions: 2, 4"):
        reg.get_model_version("fraud/1")
    with pytest.raises(ls.NotFoundError, match="has no version 1"):
        reg.delete_model_version("fraud", 1)
    deleted = project.events.list(kind="model.version_deleted", newest_first=False)
    assert [(e.subject, e.payload["version"], e.payload["run_id"]) for e in deleted] == [
        ("fraud", 3, run_id), ("fraud", 1, run_id)]
    assert reg.load_model("fraud/2").predict(np.ones((1, 3))).tolist() == [[2.0, 2.0, 2.0]]


def test_a_model_whose_versions_were_all_deleted_is_not_found_by_name(project, run_id):
    """A bare LookupError ('model version x/0 vanished') was raised instead of saying why and what to do."""
    reg = project.registry
    reg.register_model(run_id, name="fraud")
    reg.delete_model_version("fraud", 1)
    for read in (reg.get_model_version, reg.load_model, lambda ref: ls.load_model(ref, project=project)):
        with pytest.raises(ls.NotFoundError, match=r"model 'fraud' has no versions \(all deleted\); register one"):
            read("fraud")
    assert reg.register_model(run_id, name="fraud").version == 2


def test_a_version_in_use_is_not_deleted(project, run_id):
    reg = project.registry
    reg.register_model(run_id, name="fraud", alias="champion")
    reg.register_model(run_id, name="fraud")
    with pytest.raises(ls.ConflictError, match=r"version 1 of 'fraud' is the target of alias champion; move it"):
        reg.delete_model_version("fraud", 1)
    project.deployments.create("fraud-api", "fraud/2")
    with pytest.raises(ls.ConflictError, match=r"in deployment 'fraud-api' \(variant 'fraud/2' = fraud/2\)"):
        reg.delete_model_version("fraud", 2)
    with pytest.raises(ls.ConflictError, match="model 'fraud' is in deployment 'fraud-api'"):
        reg.delete_model("fraud")
    assert [v.version for v in reg.search_model_versions("fraud")] == [2, 1]  # nothing was removed
    assert project.events.list(kind="model.version_deleted") == []


def test_deleting_a_model_removes_versions_and_aliases_and_frees_the_name(project, run_id):
    reg = project.registry
    reg.register_model(run_id, name="fraud", alias="champion")
    reg.register_model(run_id, name="fraud", alias="challenger")
    reg.register_model(run_id, name="churn")
    registry.delete_model("fraud", project=project)
    assert [m.name for m in reg.list_models()] == ["churn"]
    with pytest.raises(ls.NotFoundError, match="no model named 'fraud'; registered models: churn"):
        reg.get_model_version("fraud@champion")
    (event,) = project.events.list(kind="model.deleted")
    assert event.payload == {"versions": [1, 2], "aliases": {"challenger": 2, "champion": 1}}
    assert reg.register_model(run_id, name="fraud").version == 1  # a new model under the old name
