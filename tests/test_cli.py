"""The command line: each command runs, errors are one line and exit non-zero."""

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import loopstack as ls
from loopstack.cli import cli, main


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loopstack", *args], capture_output=True, text=True, timeout=120)


def test_init_then_runs_show_compare_and_events(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["init", str(tmp_path / "p"), "--name", "cli-test"])
    assert result.exit_code == 0, result.output
    project = ls.Project.open(tmp_path / "p")
    ids = []
    for lr in ("0.1", "0.2"):
        with ls.start_run(project=project, params={"lr": lr}) as run:
            run.log_metric("acc", float(lr))
        ids.append(run.id)
    base = ["-p", str(tmp_path / "p")]
    listing = runner.invoke(cli, [*base, "runs", "-f", "metrics.acc > 0.15"])
    assert listing.exit_code == 0, listing.output
    assert ids[1][:8] in listing.output and ids[0][:8] not in listing.output
    shown = runner.invoke(cli, [*base, "runs", "show", ids[0][:8]])
    assert "lr" in shown.output and "0.1" in shown.output
    compared = runner.invoke(cli, [*base, "runs", "compare", ids[0], ids[1]])
    assert "params.lr" in compared.output and "metrics.acc" in compared.output
    events = runner.invoke(cli, [*base, "events", "--kind", "run."])
    assert events.output.count("run.finished") == 2
    assert "┃ id ┃" in events.output  # the header stays readable on 80 columns with one-digit ids
    project.close()


def test_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    result = invoke("-p", str(tmp_path), "runs")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: no loopstack.yaml")
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = invoke("--debug", "-p", str(tmp_path), "runs")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_a_path_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0]}), tmp_path / "ref.parquet")
    target = tmp_path / "missing" / "suite.yaml"
    result = invoke("quality", "profile", str(tmp_path / "ref.parquet"), "-o", str(target))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().startswith(f"error: cannot use {target}: No such file or directory")


def test_bad_filter_is_reported_with_position(tmp_path: Path) -> None:
    ls.Project.init(tmp_path, name="f").close()
    with pytest.raises(SystemExit) as exit_info:
        main(["-p", str(tmp_path), "runs", "-f", "metrics.acc >"])
    assert exit_info.value.code == 1


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for command in ("init", "runs", "models", "events", "demo"):
        assert command in result.output


@pytest.mark.parametrize("name", sorted(__import__("loopstack.cli", fromlist=["COMMANDS"]).COMMANDS))
def test_every_mounted_command_loads_and_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def fails(*args: str) -> tuple[int, str]:
    """Run the CLI as the `loopstack` command does; return its exit status and stderr, asserting no traceback."""
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert isinstance(result.exception, ls.LoopstackError), repr(result.exception)  # main() prints one line
        return result.exit_code, str(result.exception)
    assert result.exit_code != 0, result.output
    return result.exit_code, result.output


@pytest.mark.parametrize("prefix", ["", "%", "7a-1", "zz"])
def test_runs_show_refuses_what_is_not_a_run_id(tmp_path: Path, prefix: str) -> None:
    project = ls.Project.init(tmp_path / "p", name="ids")
    with ls.start_run(project=project):
        pass
    code, message = fails("-p", str(tmp_path / "p"), "runs", "show", prefix)
    assert code == 1 and f"{prefix!r} is not a run id" in message
    project.close()


def test_events_chain_of_an_unknown_id_and_bad_limits(tmp_path: Path) -> None:
    ls.Project.init(tmp_path, name="ev").close()
    code, message = fails("-p", str(tmp_path), "events", "--chain", "9999")
    assert code == 1 and "no event with id 9999" in message
    for option in ("--chain", "--limit"):
        code, message = fails("-p", str(tmp_path), "events", option, "0")
        assert code == 2 and "0 is not in the range" in message


def test_init_in_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, message = fails("init", str(tmp_path / "file" / "p"))
    assert code == 1 and "cannot create the project in" in message and "choose a folder you can write to" in message


def test_init_that_cannot_reach_its_database_leaves_no_config_behind(tmp_path: Path) -> None:
    code, message = fails("init", str(tmp_path / "p"), "--metadata", "postgresql://postgres@127.0.0.1:1/none")
    assert code == 1 and "cannot reach the metadata database" in message
    assert not (tmp_path / "p" / "loopstack.yaml").exists()
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "p")])  # rerun with a setting that works
    assert result.exit_code == 0, result.output
    ls.Project.open(tmp_path / "p").close()


@pytest.mark.parametrize("rows", ["0", "-5", "2999"])
def test_demo_refuses_too_few_rows_before_creating_anything(tmp_path: Path, rows: str) -> None:
    result = CliRunner().invoke(cli, ["demo", "--path", str(tmp_path / "d"), "--rows", rows])
    assert result.exit_code == 2 and "3000" in result.output and "--rows" in result.output
    assert not (tmp_path / "d").exists()


def test_printed_text_is_never_broken_across_lines_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    from loopstack.core.cli import console

    command = "loopstack -p /a/long/project/path/that/goes/on events --chain 122      # the story of the promotion"
    console().print(command)
    assert capsys.readouterr().out == command + "\n"  # rich wraps at 80 columns off a terminal, unless told not to


def test_a_database_error_is_one_line_naming_the_database(tmp_path: Path) -> None:
    ls.Project.init(tmp_path, name="broken").close()
    (tmp_path / ".loopstack" / "meta.db").write_bytes(b"not a database, " * 512)
    for name in ("meta.db-wal", "meta.db-shm"):
        (tmp_path / ".loopstack" / name).unlink(missing_ok=True)
    result = invoke("-p", str(tmp_path), "events")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "file is not a database" in result.stderr and "meta.db" in result.stderr
    assert "Traceback" in invoke("--debug", "-p", str(tmp_path), "events").stderr


def test_a_database_error_in_a_command_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3
    from types import SimpleNamespace

    from sqlalchemy.exc import OperationalError

    import loopstack.core.cli as core_cli

    def locked(**_: object) -> None:
        raise OperationalError("SELECT * FROM events", {}, sqlite3.OperationalError("database is locked"))

    project = SimpleNamespace(events=SimpleNamespace(list=locked))
    monkeypatch.setattr(core_cli, "open_project", lambda ctx: project)
    with pytest.raises(SystemExit) as exit_info:
        main(["events"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "database is locked" in err and "--debug" in err
    with pytest.raises(OperationalError):
        main(["--debug", "events"])


@pytest.mark.parametrize("columns", ["60", "80"])
def test_events_keeps_ids_whole_on_a_narrow_terminal(tmp_path: Path, columns: str) -> None:
    """`loopstack events --chain ID` is what other messages suggest: the id column must never collapse."""
    project = ls.Project.init(tmp_path, name="narrow")
    for number in range(12):
        project.events.emit("model.version_deleted", "a-long-subject-" * 4, {"version": number, "x": "y" * 80})
    project.close()
    result = CliRunner().invoke(cli, ["-p", str(tmp_path), "events"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == [str(n) for n in range(12, 0, -1)]
    assert all(len(line) <= int(columns) for line in result.output.splitlines())


def test_init_on_an_existing_project_suggests_shell_commands(tmp_path: Path) -> None:
    """The hint was Python (`Project.open(...)`) to someone typing in a shell."""
    ls.Project.init(tmp_path / "p", name="p").close()
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "p")])
    assert result.exit_code == 1 and isinstance(result.exception, ls.ConflictError)
    message = str(result.exception)
    assert f"`cd {tmp_path / 'p'}` or `loopstack -p {tmp_path / 'p'} ...`" in message
    assert "Project.open" not in message
