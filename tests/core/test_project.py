from pathlib import Path

import pytest

from loopstack.core.errors import ConflictError, NotFoundError
from loopstack.core.project import Project


def test_init_writes_config_and_open_reads_it(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p", name="fraud")
    assert (tmp_path / "p" / "loopstack.yaml").is_file()
    project.close()
    reopened = Project.open(tmp_path / "p")
    assert reopened.config.name == "fraud"
    reopened.close()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    Project.init(tmp_path, name="one").close()
    with pytest.raises(ConflictError, match="already exists"):
        Project.init(tmp_path, name="two")
    assert "one" in (tmp_path / "loopstack.yaml").read_text()


def test_open_finds_project_from_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Project.init(tmp_path, name="found").close()
    nested = tmp_path / "src" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    monkeypatch.delenv("LOOPSTACK_PROJECT", raising=False)
    project = Project.open()
    assert project.root == tmp_path.resolve()
    project.close()


def test_open_without_project_explains_how_to_create_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOOPSTACK_PROJECT", raising=False)
    with pytest.raises(NotFoundError, match="loopstack init"):
        Project.open()


def test_opening_twice_gives_the_same_handle(tmp_path: Path) -> None:
    first = Project.init(tmp_path, name="same")
    assert Project.open(tmp_path) is first
    first.close()


def test_sqlite_runs_in_wal_mode_with_busy_timeout(sqlite_project: Project) -> None:
    with sqlite_project.db.read() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_concurrent_inits_of_one_folder_leave_one_winner(tmp_path: Path) -> None:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = pool.starmap(_init_in_child, [(str(tmp_path), f"name{i}") for i in range(8)])
    winners = [name for name, error in outcomes if error is None]
    assert len(winners) == 1, outcomes
    assert all(error == "ConflictError" for _, error in outcomes if error is not None)
    assert f"name: {winners[0]}" in (tmp_path / "loopstack.yaml").read_text()


def _init_in_child(path: str, name: str) -> tuple[str, str | None]:
    from loopstack.core.errors import LoopstackError

    try:
        Project.init(path, name=name).close()
    except LoopstackError as error:
        return name, type(error).__name__
    return name, None


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a folder that is not the project's, with HOME at tmp_path/home: the cwd must not matter."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return folder


@pytest.mark.parametrize("artifacts", ["file://arts", "~/arts"])
def test_a_relative_artifacts_location_is_found_from_the_project_not_the_cwd(
    tmp_path: Path, elsewhere: Path, artifacts: str
) -> None:
    project = Project.init(tmp_path / "p", name="arts", artifacts=artifacts)
    digest = project.artifacts.put_bytes(b"model")
    project.close()
    base = tmp_path / "p" if artifacts.startswith("file://") else tmp_path / "home"
    assert (base / "arts" / "objects" / digest[:2] / digest[2:]).is_file()
    assert not list(elsewhere.iterdir())
    assert not (tmp_path / "p" / "~").exists()


@pytest.mark.parametrize("metadata", ["sqlite:///~/meta.db", "sqlite+pysqlite:///rel/meta.db"])
def test_a_sqlite_metadata_file_is_found_from_home_or_the_project_not_the_cwd(
    tmp_path: Path, elsewhere: Path, metadata: str
) -> None:
    """`~` used to become a literal folder, and a `sqlite+driver:///` path was left relative to the cwd."""
    project = Project.init(tmp_path / "p", name="meta", metadata=metadata)
    project.events.emit("probe", "s")
    project.close()
    expected = tmp_path / "home" / "meta.db" if "~" in metadata else tmp_path / "p" / "rel" / "meta.db"
    assert expected.is_file()
    assert not list(elsewhere.iterdir())
    assert not (tmp_path / "p" / "~").exists()


@pytest.mark.parametrize("settings", [{}, {"tracking": {"capture_git": False}}])
def test_init_applies_environment_overrides_in_memory_and_writes_the_file_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict
) -> None:
    """LOOPSTACK_METADATA set for one shell used to be written into loopstack.yaml for good."""
    other = tmp_path / "other.db"
    monkeypatch.setenv("LOOPSTACK_METADATA", f"sqlite:///{other}")
    project = Project.init(tmp_path / "p", name="fraud", **settings)
    assert project.db.url.endswith(str(other))
    project.close()
    assert "other.db" not in (tmp_path / "p" / "loopstack.yaml").read_text()
    monkeypatch.delenv("LOOPSTACK_METADATA")
    reopened = Project.open(tmp_path / "p")
    assert reopened.db.url.endswith("/p/.loopstack/meta.db")
    assert reopened.config.tracking.capture_git is settings.get("tracking", {}).get("capture_git", True)
    reopened.close()
