"""`loopstack serve` and `loopstack predict` refuse bad input in one line, before serving or writing anything."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import loopstack as ls
from loopstack.cli import cli


@pytest.fixture
def registered(sqlite_project: ls.Project, data) -> ls.Project:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    X, y = data
    frame = pd.DataFrame(X[:, :2], columns=["a", "b"])
    with ls.start_run(project=sqlite_project) as run:
        run.log_model(LogisticRegression().fit(frame, y), "model", example=frame.head())
    ls.register_model(run.id, "model", name="fraud", alias="champion", project=sqlite_project)
    frame.to_parquet(sqlite_project.root / "in.parquet")
    return sqlite_project


def _fails(project: ls.Project, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-p", str(project.root), *args])
    assert result.exit_code != 0, result.output
    if isinstance(result.exception, ls.LoopstackError):
        return result.exit_code, str(result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a usage error, not a traceback
    return result.exit_code, result.output


@pytest.mark.parametrize(("ref", "message"), [
    ("nosuch", "no model named 'nosuch'"),
    ("fraud@nosuch", "has no alias 'nosuch'"),
    ("fraud/9", "has no version 9"),
    ("fraud@", "invalid alias ''"),
    ("fraud/abc", "invalid model reference 'fraud/abc'"),
])
def test_serve_refuses_a_bad_model_ref_before_starting(registered: ls.Project, monkeypatch: pytest.MonkeyPatch,
                                                       ref: str, message: str) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server was started")

    monkeypatch.setattr("loopstack.serving.server.serve", never)
    code, text = _fails(registered, "serve", ref)
    assert code == 1 and message in text


def test_serve_refuses_unknown_features_a_bad_port_and_no_gpus(registered: ls.Project,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("loopstack.serving.server.serve", lambda *a, **k: pytest.fail("the server was started"))
    assert "no feature service 'nosuch'" in _fails(registered, "serve", "fraud", "--features", "nosuch")[1]
    assert _fails(registered, "serve", "fraud", "--gpus", "0")[1] == "--gpus 0 must be a positive number"
    code, text = _fails(registered, "serve", "fraud", "--port", "70000")
    assert code == 2 and "70000 is not in the range" in text


def test_serve_refuses_a_model_logged_with_features_the_store_lacks(registered: ls.Project, data,  # type: ignore[no-untyped-def]
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = data
    frame = pd.DataFrame(X[:, :2], columns=["a", "b"])
    with ls.start_run(project=registered) as run:
        run.log_model(LogisticRegression().fit(frame, y), "model", example=frame.head(), features=["gone:a", "gone:b"])
    ls.register_model(run.id, "model", name="stale", project=registered)
    monkeypatch.setattr("loopstack.serving.server.serve", lambda *a, **k: pytest.fail("the server was started"))
    code, text = _fails(registered, "serve", "stale/1")
    assert code == 1 and "stale/1 was logged with features=['gone:a', 'gone:b'], but" in text and "'gone'" in text


def test_predict_names_an_input_that_is_not_parquet(registered: ls.Project) -> None:
    csv = registered.root / "in.csv"
    pd.read_parquet(registered.root / "in.parquet").to_csv(csv, index=False)
    code, text = _fails(registered, "predict", "--model", "fraud", "--input", str(csv), "--output",
                        str(registered.root / "out.parquet"))
    assert code == 1 and f"input {str(csv)!r} is not a Parquet file" in text
    (registered.root / "empty").mkdir()
    text = _fails(registered, "predict", "--model", "fraud", "--input", str(registered.root / "empty"), "--output",
                  str(registered.root / "out.parquet"))[1]
    assert "holds no Parquet files" in text


def test_predict_never_writes_over_its_input_or_into_a_folder(registered: ls.Project) -> None:
    source = registered.root / "in.parquet"
    before = source.read_bytes()
    text = _fails(registered, "predict", "--model", "fraud", "--input", str(source), "--output", str(source))[1]
    assert "would overwrite the input" in text
    assert source.read_bytes() == before
    folder = registered.root / "out"
    folder.mkdir()
    text = _fails(registered, "predict", "--model", "fraud", "--input", str(source), "--output", str(folder))[1]
    assert "is a folder; give a Parquet file" in text
    assert list(registered.root.glob("*.parts")) == [] and list(registered.root.glob(".*.tmp")) == []


def test_predict_threads_must_be_positive(registered: ls.Project, tmp_path: Path) -> None:
    code, text = _fails(registered, "predict", "--model", "fraud", "--input", str(registered.root / "in.parquet"),
                        "--output", str(tmp_path / "o.parquet"), "--threads", "0")
    assert code == 2 and "0 is not in the range x>=1" in text


@pytest.mark.parametrize("flag", ["--timeout", "--max-wait-ms", "--refresh", "--inline-ms"])
def test_serve_refuses_nan_durations(registered: ls.Project, monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    """--timeout nan passed every check and the server answered every request with a 500 (NaN deadline)."""
    monkeypatch.setattr("loopstack.serving.server.serve", lambda *a, **k: pytest.fail("the server was started"))
    code, text = _fails(registered, "serve", "fraud", flag, "nan")
    assert code == 1 and text.startswith(f"{flag} nan must be")


@pytest.mark.parametrize(("args", "message"), [
    (("--threads", "0"), "--threads 0 must be a positive number"),
    (("--timeout", "0"), "--timeout 0.0 must be a positive number"),
    (("--gpus", "-1"), "--gpus -1 must be a positive number"),
    (("--max-queue", "0"), "--max-queue 0 must be a positive number"),
    (("--max-wait-ms", "-1"), "--max-wait-ms -1.0 must be >= 0"),
    (("--inline-ms", "-1"), "--inline-ms -1.0 must be >= 0 and finite"),
    (("--refresh", "-1"), "--refresh -1.0 must be >= 0 (0 disables alias refresh)"),
])
def test_serve_errors_name_the_flag_typed(registered: ls.Project, monkeypatch: pytest.MonkeyPatch,
                                          args: tuple[str, str], message: str) -> None:
    """`--threads 0` was reported as `predict_threads=0 for 'server'`, a field the user never typed."""
    monkeypatch.setattr("loopstack.serving.server.serve", lambda *a, **k: pytest.fail("the server was started"))
    assert _fails(registered, "serve", "fraud", *args) == (1, message)


def test_serve_names_a_host_that_does_not_resolve(registered: ls.Project, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("uvicorn was started"))
    code, text = _fails(registered, "serve", "fraud", "--host", "999.1.1.1")
    assert code == 1 and "cannot listen on host '999.1.1.1'" in text


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_names_a_port_in_use_in_one_line(registered: ls.Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn logged `[Errno 98] ... address already in use` and exited 3, after a 'serving on' line."""
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("uvicorn was started"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(cli, ["-p", str(registered.root), "serve", "fraud", "--port", str(port)])
    assert result.exit_code == 1 and str(result.exception) == f"port {port} is in use; pick another with --port"
    assert "serving" not in result.output


def test_serve_prints_its_address_only_once_started(registered: ls.Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'serving on' line comes after the models loaded and the port is bound, never before an error."""
    import uvicorn

    async def stop_at_once(self: uvicorn.Server) -> None:
        assert self.started

    monkeypatch.setattr(uvicorn.Server, "main_loop", stop_at_once)  # start up, then shut down at once
    port = _free_port()
    result = CliRunner().invoke(cli, ["-p", str(registered.root), "serve", "fraud", "--port", str(port)])
    assert result.exit_code == 0, result.output
    assert f"serving fraud on http://127.0.0.1:{port}" in result.output
    failed = CliRunner().invoke(cli, ["-p", str(registered.root), "serve", "fraud", "--port", str(port),
                                      "--gpu", "NOPE"])
    assert failed.exit_code == 1 and "'NOPE' is not in the price table" in str(failed.exception)
    assert "serving" not in failed.output


@pytest.mark.parametrize(("args", "message"), [
    (("--max-queue", "0"), "--max-queue 0 must be a positive number"),
    (("--inline-ms", "-1"), "--inline-ms -1.0 must be >= 0 and finite"),
    (("--timeout", "nan"), "--timeout nan must be a positive number"),
])
def test_deploy_serve_takes_the_batching_flags_and_names_them(registered: ls.Project, monkeypatch: pytest.MonkeyPatch,
                                                              args: tuple[str, str], message: str) -> None:
    monkeypatch.setattr("loopstack.serving.serve", lambda *a, **k: pytest.fail("the server was started"))
    assert _fails(registered, "deploy", "serve", *args) == (1, message)


def test_deploy_serve_hands_its_batching_flags_to_every_variant(registered: ls.Project,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`deploy serve` had no batching flags: every variant ran with ModelSpec's defaults."""
    started: dict[str, object] = {}
    monkeypatch.setattr("loopstack.serving.serve", lambda *a, **k: started.update(k))
    result = CliRunner().invoke(cli, ["-p", str(registered.root), "deploy", "serve", "--max-batch-size", "16",
                                      "--inline-ms", "0"])
    assert result.exit_code == 0, result.output
    batching = started["settings"].variant_batching  # type: ignore[attr-defined]
    assert (batching["max_batch_size"], batching["inline_ms"], batching["max_wait_ms"]) == (16, 0.0, 2.0)


def test_server_settings_pickle_and_copy_with_variant_batching() -> None:
    """A read-only mapping in the frozen dataclass made every ServerSettings unpicklable."""
    import copy
    import dataclasses
    import pickle

    from loopstack.serving import ServerSettings

    settings = ServerSettings(variant_batching={"max_batch_size": 8})
    assert pickle.loads(pickle.dumps(settings)) == settings == copy.deepcopy(settings)
    assert dataclasses.asdict(settings)["variant_batching"] == {"max_batch_size": 8}
