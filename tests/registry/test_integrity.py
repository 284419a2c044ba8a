"""A model whose stored bytes changed is refused before anything is unpickled."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import loopstack as ls


class Spy:
    """Stands in for pickle.loads and records every call."""

    def __init__(self) -> None:
        self.calls = 0
        self.original = pickle.loads

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.original(*args, **kwargs)


class Evil:
    """Unpickling this creates a folder: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def registered(project, log_in_run, classification):
    from sklearn.linear_model import LogisticRegression

    X, y = classification
    run_id, logged = log_in_run(project, LogisticRegression().fit(X, y), X.head())
    project.registry.register_model(run_id, name="fraud", alias="champion")
    return logged


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy()
    monkeypatch.setattr(pickle, "loads", spy)
    return spy


def _object(project: ls.Project, digest: str) -> Path:
    return Path(project.artifacts.path_of(digest))


def test_intact_model_loads_through_pickle(project, registered, spy, classification):
    """The control: the spy does see the load when nothing was tampered with."""
    X, _ = classification
    assert ls.load_model("fraud@champion", project=project).predict(X).shape == (len(X),)
    assert spy.calls == 1


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "replace-with-evil-pickle"])
def test_damaged_model_file_raises_and_is_never_unpickled(project, registered, spy, tmp_path, damage):
    path = _object(project, registered.files["model.pkl"])
    original = path.read_bytes()
    marker = tmp_path / "pwned"
    if damage == "flip-a-byte":
        changed = original[:100] + bytes([original[100] ^ 0xFF]) + original[101:]
    elif damage == "truncate":
        changed = original[: len(original) // 2]
    else:
        changed = pickle.dumps(Evil(str(marker)))
    path.write_bytes(changed)
    with pytest.raises(ls.IntegrityError, match=registered.files["model.pkl"]) as error:
        ls.load_model("fraud@champion", project=project)
    assert "modified or truncated" in str(error.value)
    assert spy.calls == 0
    assert not marker.exists()


def test_damaged_manifest_raises_before_any_file_is_read(project, registered, spy):
    path = _object(project, registered.digest)
    manifest = json.loads(path.read_bytes())
    manifest["files"]["model.pkl"] = "0" * 64  # point it elsewhere
    path.write_bytes(json.dumps(manifest).encode())
    with pytest.raises(ls.IntegrityError, match=registered.digest):
        ls.load_model("fraud/1", project=project)
    assert spy.calls == 0


def test_missing_model_file_is_not_found(project, registered, spy):
    _object(project, registered.files["model.pkl"]).unlink()
    with pytest.raises(ls.NotFoundError, match="is missing from the store"):
        ls.load_model("fraud", project=project)
    assert spy.calls == 0


def test_python_flavor_goes_through_the_same_check(sqlite_project, log_in_run, spy):
    run_id, logged = log_in_run(sqlite_project, lambda x: np.asarray(x) + 1, np.zeros((1, 2)))
    spy.calls = 0
    path = _object(sqlite_project, logged.files["model.cloudpickle"])
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ls.IntegrityError):
        ls.load_model(f"runs:/{run_id}/model", project=sqlite_project)
    assert spy.calls == 0
