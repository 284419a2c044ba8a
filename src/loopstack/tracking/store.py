"""Tracking storage: experiments and runs in the metadata DB, writes through the buffer."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from loopstack.core.direct import Compiled
from loopstack.core.errors import BackendUnavailableError, ConflictError, NotFoundError, ValidationError
from loopstack.tracking.entities import (
    FINISHED,
    KILLED,
    RUNNING,
    Experiment,
    Metric,
    Run,
    RunInfo,
    check_storable,
    validate_key,
    validate_status,
)
from loopstack.tracking.processes import is_process_alive, own_start_time
from loopstack.tracking.writer import BufferedWriter, _logger, is_transient

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from loopstack.core.direct import DirectStatement
    from loopstack.core.project import Project

DEFAULT_EXPERIMENT = "Default"
HOST = socket.gethostname()
RUN_COLUMNS = (
    "id", "experiment_id", "name", "status", "start_time", "end_time", "parent_id", "host", "pid", "pid_started",
    "heartbeat",
)  # fmt: skip

# The statements of a run's life as SQLAlchemy compiles them for SQLite, so that a short
# script on SQLite never imports it (see core.sqlite); a test compares each with its statement.
_SQLITE_INSERT_RUN = Compiled(
    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
    RUN_COLUMNS,
    floats=("start_time", "end_time", "pid_started", "heartbeat"),
)
_SQLITE_END_RUN = Compiled(
    "UPDATE runs SET status=?, end_time=? WHERE runs.id = ?",
    ("new_status", "new_end_time", "run"),
    floats=("new_end_time",),
)
_SQLITE_END_SPOOLED = Compiled(
    "UPDATE runs SET status=?, end_time=? WHERE runs.id = ? AND (runs.status = ? OR runs.status = ?) "
    "AND runs.host = ? AND runs.pid = ? AND runs.pid_started = ?",
    ("new_status", "new_end_time", "run", "running", "killed", "spooled_host", "spooled_pid", "spooled_started"),
    floats=("new_end_time", "spooled_started"),
)
_SQLITE_BEAT = Compiled("UPDATE runs SET heartbeat=? WHERE runs.id = ?", ("now", "run"), floats=("now",))
_SQLITE_NEW_EXPERIMENT = Compiled(
    "INSERT INTO experiments (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
    ("name", "created_at"),
    floats=("created_at",),
)
_EXPERIMENT_BY_NAME = "SELECT id, name, created_at FROM experiments WHERE name = ?"
_SQLITE_EXPERIMENT_ID = "SELECT experiments.id \nFROM experiments \nWHERE experiments.name = ?"
# What a search returns with each run, one row per value, in one statement: kind (0 params, 1 metrics,
# 2 tags, 3 inputs), run id, key (an input's context), text (an input's digest), number, an input's name
# and rows. The ids are one parameter of any length: an IN list is recompiled for every new length.
_HYDRATE = """WITH ids(id) AS ({ids})
SELECT 0, run_id, key, value, CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS TEXT), CAST(NULL AS BIGINT)
  FROM params WHERE run_id IN (SELECT id FROM ids)
UNION ALL SELECT 1, run_id, key, NULL, value, NULL, NULL FROM latest_metrics WHERE run_id IN (SELECT id FROM ids)
UNION ALL SELECT 2, run_id, key, value, NULL, NULL, NULL FROM tags WHERE run_id IN (SELECT id FROM ids)
UNION ALL SELECT 3, ri.run_id, ri.context, ds.digest, NULL, ds.name, ds.num_rows
  FROM run_inputs ri JOIN datasets ds ON ds.digest = ri.dataset_digest WHERE ri.run_id IN (SELECT id FROM ids)"""
_SQLITE_RUNNING = (
    "SELECT runs.id, runs.host, runs.pid, runs.pid_started, runs.heartbeat \nFROM runs \nWHERE runs.status = ?"
)


class TrackingStore:
    """Experiments, runs, params, metrics, tags, artifacts and inputs of one project."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.db = project.db
        self.settings = project._setting("tracking")  # its attributes, without building the config model
        self.writer = BufferedWriter(self.db, self.settings.flush_interval_s, self.settings.max_buffered_points)
        self.writer.before_write.append(self._beat)
        self.writer.on_drop = self._record_dropped
        self.writer.on_conflict = self._record_conflicts
        self._live_runs: set[str] = set()
        self._last_beat = 0.0
        self._experiment_ids: dict[str, int] = {}
        self._experiments: dict[str, Experiment] = {}  # found by name (see experiment_by_name)
        self._searches: dict[tuple[Any, ...], Any] = {}  # built search queries by their arguments (see search)
        # compiled once, run on the DBAPI cursor: every run inserts one row and ends with one update
        self._insert_run = self.db.direct(lambda: self.t("runs").insert(), RUN_COLUMNS, sqlite=_SQLITE_INSERT_RUN)

    @cached_property
    def _end_statement(self) -> DirectStatement:
        """Compiled on the first end_run, so that a process's first start_run does not wait for it."""

        def build() -> Any:
            from sqlalchemy import bindparam

            runs = self.t("runs")
            return (
                runs.update()
                .where(runs.c.id == bindparam("run"))
                .values(status=bindparam("new_status"), end_time=bindparam("new_end_time"))
            )

        return self.db.direct(build, sqlite=_SQLITE_END_RUN)

    @cached_property
    def _end_spooled_statement(self) -> DirectStatement:
        """A spooled run end: applied only while the run is as the spooling process left it (see `_replay`)."""

        def build() -> Any:
            from sqlalchemy import bindparam, or_

            runs = self.t("runs")
            return (
                runs.update()
                .where(runs.c.id == bindparam("run"),
                       or_(runs.c.status == bindparam("running"), runs.c.status == bindparam("killed")),
                       runs.c.host == bindparam("spooled_host"), runs.c.pid == bindparam("spooled_pid"),
                       runs.c.pid_started == bindparam("spooled_started"))
                .values(status=bindparam("new_status"), end_time=bindparam("new_end_time"))
            )

        return self.db.direct(build, sqlite=_SQLITE_END_SPOOLED)

    @cached_property
    def _beat_statement(self) -> DirectStatement:
        """The heartbeat of one run (SQLite files only; elsewhere one update covers every live run)."""

        def build() -> Any:
            from sqlalchemy import bindparam

            runs = self.t("runs")
            return runs.update().where(runs.c.id == bindparam("run")).values(heartbeat=bindparam("now"))

        return self.db.direct(build, sqlite=_SQLITE_BEAT)

    def t(self, name: str) -> Any:
        return self.db.table(name)

    # -- experiments -------------------------------------------------------
    def get_or_create_experiment(self, name: str) -> int:
        if name in self._experiment_ids:
            return self._experiment_ids[name]
        _check_name(name, "experiment name")
        if self.db.raw is not None:
            found = self._sqlite_experiment_id(name)
            self._experiment_ids[name] = found
            return found
        from sqlalchemy import select

        table = self.t("experiments")
        with self.db.read() as connection:
            found = connection.execute(select(table.c.id).where(table.c.name == name)).scalar()
        if found is None:
            with self.db.write() as connection:
                self.db.upsert(
                    connection, table, [{"name": name, "created_at": time.time()}], keys=("name",), update=()
                )
                found = connection.execute(select(table.c.id).where(table.c.name == name)).scalar_one()
        self._experiment_ids[name] = int(found)
        return int(found)

    def _sqlite_experiment_id(self, name: str) -> int:
        assert self.db.raw is not None
        with self.db.raw.transaction() as connection:
            found = connection.scalar(_SQLITE_EXPERIMENT_ID, (name,))
        if found is None:
            with self.db.direct_write() as connection:
                rows = [{"name": name, "created_at": time.time()}]
                self.db.upsert(connection, "experiments", rows, ("name",), (), sqlite=_SQLITE_NEW_EXPERIMENT)
                found = connection.scalar(_SQLITE_EXPERIMENT_ID, (name,))
        return int(found)

    def list_experiments(self) -> list[Experiment]:
        from sqlalchemy import select

        table = self.t("experiments")
        with self.db.read() as connection:
            return [Experiment(**row._asdict()) for row in connection.execute(select(table).order_by(table.c.id))]

    def experiment_by_name(self, name: str) -> Experiment:
        """A search by experiment name calls this each time: listing every experiment to find one
        cost a search a fifth of its time."""
        found = self._experiments.get(name)
        if found is not None:  # experiments are never renamed or deleted, so a found one stays true
            return found
        with self._driver_reads() as fetchall:
            rows = fetchall(_EXPERIMENT_BY_NAME.replace("?", "%s" if self.db.dialect == "postgresql" else "?"), (name,))
        if not rows:
            raise NotFoundError(f"no experiment named {name!r}; names: {[e.name for e in self.list_experiments()]}")
        found = self._experiments[name] = Experiment(*rows[0])
        return found

    # -- runs ----------------------------------------------------------------
    def create_run(self, experiment_id: int, name: str | None, parent_id: str | None) -> RunInfo:
        run_id = uuid.uuid4().hex
        now = time.time()
        row = {
            "id": run_id,
            "experiment_id": experiment_id,
            "name": name or _run_name(run_id),
            "status": RUNNING,
            "start_time": now,
            "end_time": None,
            "parent_id": parent_id,
            "host": HOST,
            "pid": os.getpid(),
            "pid_started": own_start_time(),
            "heartbeat": now,
        }
        if name is not None:
            _check_name(name, "run name")
        with self.db.direct_write() as connection:
            self._insert_run.execute(connection, row)
            self.project.events.emit(
                "run.started",
                run_id,
                {"name": row["name"], "experiment_id": experiment_id, "parent_id": parent_id},
                connection=connection,
            )
        self._live_runs.add(run_id)
        self.writer.start()
        return _info(row)

    def resume_run(self, run_id: str) -> RunInfo:
        """Take ownership of a run, checked in the write that takes it: checked in a read before, two
        processes could both see the run ended and both resume it (the later one's params were dropped)."""
        from sqlalchemy import select

        runs = self.t("runs")
        query = select(runs).where(runs.c.id == str(run_id))
        if self.db.dialect == "postgresql":  # SQLite's write transaction already holds the database's write lock
            query = query.with_for_update()
        with self.db.write() as connection:
            row = connection.execute(query).first()
            if row is None:
                raise NotFoundError(f"no run with id {run_id!r}; list runs with `loopstack runs`")
            owned_elsewhere = row.pid != os.getpid() or row.host != HOST
            if row.status == RUNNING and run_id not in self._live_runs and owned_elsewhere and self._owner_alive(row):
                raise ConflictError(f"run {run_id} is still running in another live process; end it there first")
            connection.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    status=RUNNING,
                    end_time=None,
                    host=HOST,
                    pid=os.getpid(),
                    pid_started=own_start_time(),
                    heartbeat=time.time(),
                )
            )
            self.project.events.emit("run.resumed", run_id, {}, connection=connection)
        self._live_runs.add(run_id)
        self.writer.start()
        return self.get_run_info(run_id)

    def end_run(self, run_id: str, status: str = FINISHED, end_time: float | None = None) -> None:
        """Write the buffered rows and mark the run ended, in one transaction.

        A metadata database that cannot be reached raises BackendUnavailableError; the rows and the run's end
        are kept, and the writer retries them in the background and once more when the process exits (or
        closes the project). Should the database stay away until then, they are kept in the spool folder and
        written by the next process that opens the project (`replay_spool`).
        """
        validate_status(status)
        mark_ended = self._run_end(run_id, status, end_time or time.time())
        try:
            self.writer.flush(then=mark_ended, check=False)  # conflicts are raised by the fluent API's end of run
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(
                f"run {run_id} could not be marked {status}: {exc}. Its unwritten rows and its end are kept and "
                "retried in the background; if the process exits before the database is back, they are kept in "
                f"{self.spool_folder} and written when a process next opens the project"
            ) from None
        finally:
            self._live_runs.discard(run_id)

    def _run_end(self, run_id: str, status: str, end_time: float) -> Callable[[Connection], None]:
        """A run's end, to run in a write's transaction; its ``record`` is what `spool_unwritten` keeps of it."""
        values = {"run": run_id, "new_status": status, "new_end_time": end_time}

        def mark_ended(connection: Connection) -> None:  # in the flush's transaction (or a retry's)
            self._end_statement.execute(connection, values)
            self.project.events.emit(f"run.{status.lower()}", run_id, {}, connection=connection)

        mark_ended.record = {  # type: ignore[attr-defined]
            "run_id": run_id, "status": status, "end_time": end_time, "host": HOST, "pid": os.getpid(),
            "pid_started": own_start_time()}
        return mark_ended

    # -- the spool: what a process could not write before it exited (loopstack.tracking.spool) ---------
    @property
    def spool_folder(self) -> Path:
        return self.project.root / ".loopstack" / "spool" / "tracking"

    def spool_unwritten(self) -> tuple[Path | None, int, int]:
        """Keep the rows and run ends the database did not take in a file of the spool folder (at exit, with
        the database away); `replay_spool` writes them when a process next opens the project.

        Returns the file (None when nothing was unwritten), its rows and its run ends. An OSError (a full
        disk) leaves the rows and ends with the writer, so that the caller can count what is lost.
        """
        from loopstack.tracking import spool

        batch, thens = self.writer.take_unwritten()
        ends = [then.record for then in thens if getattr(then, "record", None) is not None]
        rows = sum(len(part) for part in batch)
        if not rows and not ends:
            return None, 0, 0
        try:
            return spool.write(self.spool_folder, batch, ends), rows, len(ends)
        except OSError:
            self.writer.give_back(batch, thens)
            raise

    def replay_spool(self) -> list[Path]:
        """Write the spool's files, oldest first, each in one transaction; returns those written.

        A file another process holds is skipped (it is writing it). Rows and run ends of runs deleted since
        are left out (logged); a run end applies only to a run still as its process left it (running, or
        marked KILLED meanwhile), not to one resumed since. The transaction records a
        ``tracking.spool_replayed`` event naming the file, so a process killed between the commit and the
        file's removal does not write it twice. A database that is away again keeps the file for the next
        open; a file the database refuses, or that is no spool file, is renamed ``*.rejected`` (logged), so
        that it does not fail every later open.
        """
        from loopstack.tracking import spool

        written = []
        for path in spool.files(self.spool_folder):
            with spool.taken(path) as handle:
                if handle is None:
                    continue
                try:
                    self._replay(spool.read(handle, path), path.stem)
                    failure = None
                except Exception as exc:
                    failure = exc
            # the file is closed now: Windows removes or renames no open file
            if failure is None:
                path.unlink(missing_ok=True)
                written.append(path)
            elif _passing(failure):
                _logger().error("loopstack could not write the tracking rows kept in %s (kept for the next open): "
                                "%s", path, failure)
            else:
                _reject(path, failure)
        return written

    def _replay(self, record: tuple[tuple[list[tuple[Any, ...]], ...], list[dict[str, Any]]], name: str) -> None:
        if self.project.events.list(kind="tracking.spool_replayed", subject=name, limit=1):
            return  # written before a kill that left the file behind
        batch, ends = record
        known = self._existing_runs({row[0] for part in batch for row in part} | {e["run_id"] for e in ends})
        kept = tuple([row for row in part if row[0] in known] for part in batch)
        dropped = sum(len(part) for part in batch) - sum(len(part) for part in kept)
        if dropped or any(e["run_id"] not in known for e in ends):
            _logger().warning("loopstack left out %d spooled tracking rows of %s: their runs were deleted", dropped,
                              name)

        def mark_replayed(connection: Connection) -> None:
            ended = sum(self._end_spooled_run(connection, end) for end in ends if end["run_id"] in known)
            payload = {"rows": sum(len(part) for part in kept), "run_ends": ended, "left_out": dropped}
            self.project.events.emit("tracking.spool_replayed", name, payload, connection=connection)

        self.writer.write_now(kept, [mark_replayed])  # type: ignore[arg-type]
        self.writer.take_conflicts(lambda run: run in known)  # logged when written; no caller of theirs is here

    def _end_spooled_run(self, connection: Connection, end: dict[str, Any]) -> bool:
        """End a run as its spooled end says, if the run is still as the spooling process left it: the same
        host, pid and process start, running or marked KILLED since (its process gone). A run another process
        resumed meanwhile keeps its state; the condition is in the UPDATE, so a resume racing the replay is safe.
        """
        values = {"run": end["run_id"], "running": RUNNING, "killed": KILLED, "spooled_host": end.get("host"),
                  "spooled_pid": end.get("pid"), "spooled_started": end.get("pid_started"),
                  "new_status": end["status"], "new_end_time": end["end_time"]}
        if not self._end_spooled_statement.execute_count(connection, values):
            return False
        self.project.events.emit(f"run.{end['status'].lower()}", end["run_id"], {}, connection=connection)
        return True

    def _existing_runs(self, run_ids: set[str]) -> set[str]:
        from sqlalchemy import select

        runs = self.t("runs")
        with self.db.read() as connection:
            return set(connection.execute(select(runs.c.id).where(runs.c.id.in_(sorted(run_ids)))).scalars())

    def get_run_info(self, run_id: str) -> RunInfo:
        from sqlalchemy import select

        runs = self.t("runs")
        with self.db.read() as connection:
            row = connection.execute(select(runs).where(runs.c.id == str(run_id))).first()
        if row is None:
            raise NotFoundError(f"no run with id {run_id!r}; list runs with `loopstack runs`")
        return _info(row._asdict())

    def get_run(self, run_id: str) -> Run:
        self.writer.flush_pending()
        info = self.get_run_info(run_id)
        with self._driver_reads() as fetchall:
            return self._hydrate([info], fetchall)[0]

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        from sqlalchemy import select

        self.writer.flush_pending()
        table = self.t("metrics")
        query = (
            select(table.c.key, table.c.value, table.c.step, table.c.timestamp)
            .where(table.c.run_id == run_id, table.c.key == key)
            .order_by(table.c.step, table.c.timestamp, table.c.id)
        )
        with self.db.read() as connection:
            rows = connection.execute(query).all()
        return [Metric(k, float("nan") if v is None else v, s, t) for k, v, s, t in rows]

    def search(
        self,
        experiment_ids: list[int] | None,
        filter_string: str | None,
        order_by: list[str] | str | None,
        max_results: int,
        page_token: str | None,
    ) -> tuple[list[Run], str | None]:
        from sqlalchemy import select

        from loopstack.tracking.search import compile_filter, parse_filter, parse_order_by

        _check_search_arguments(filter_string, max_results)
        self.writer.flush_pending()
        orders = tuple([order_by] if isinstance(order_by, str) else order_by or ())
        keys = parse_order_by(list(orders))
        after = _decode_token(page_token, len(keys) + 2)
        experiments = None if experiment_ids is None else tuple(experiment_ids)
        # the statement's shape depends on which of the last row's sort values were missing
        shape = None if after is None else tuple(value is None for value in after)
        key = (filter_string, orders, experiments, max_results, shape)
        statement = self._searches.get(key)
        if statement is None:  # building and compiling the statement cost more than running it
            runs = self.t("runs")
            tables = {name: self.t(name) for name in ("runs", "latest_metrics", "params", "tags")}
            query = select(runs)
            condition = compile_filter(parse_filter(filter_string), tables, self.db.dialect)
            if condition is not None:
                query = query.where(condition)
            if experiments is not None:  # None is every experiment; an empty list is none of them
                query = query.where(runs.c.experiment_id.in_(experiments))
            query = _order(query, keys, tables, shape).limit(max_results + 1)
            if len(self._searches) >= 256:
                self._searches.clear()
            statement = self._searches[key] = _DriverStatement(query, self.db)
        sql, params = statement.bind(after or ())
        with self._driver_reads() as fetchall:  # the hits and their values from one snapshot
            found = fetchall(sql, params)
            rows = [dict(zip(statement.columns, row, strict=True)) for row in found[:max_results]]
            # the next page starts after this page's last row in sort order (its sort values end the row)
            last = found[max_results - 1][statement.columns.index("sort_0") :] if len(found) > max_results else None
            token = None if last is None else _encode_token(last)
            return self._hydrate([_info(row) for row in rows], fetchall), token

    @contextmanager
    def _driver_reads(self) -> Iterator[Callable[[str, Any], list[Any]]]:
        """A read transaction whose statements go straight to the driver and return its plain tuples.

        SQLAlchemy's work per statement (and on a SQLite file, per connection) cost a search more than
        SQLite's own; the statements here are written or compiled in advance.
        """
        if self.db.raw is not None:
            with self.db.raw.transaction() as connection:
                yield connection.fetchall
            return
        with self.db.read() as connection:
            cursor = connection.connection.cursor()

            def fetchall(sql: str, params: Any) -> list[Any]:
                cursor.execute(sql, params)
                return cursor.fetchall()

            try:
                yield fetchall
            finally:
                cursor.close()

    def _hydrate(self, infos: list[RunInfo], fetchall: Callable[[str, Any], list[Any]]) -> list[Run]:
        """Params, latest metrics, tags and inputs of the runs, read in one statement."""
        ids = [info.id for info in infos]
        if not ids:
            return []
        values = {i: ({}, {}, {}) for i in ids}  # params, metrics, tags
        inputs: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if self.db.dialect == "postgresql":
            sql, params = _HYDRATE.format(ids="SELECT unnest(CAST(%s AS TEXT[]))"), (ids,)
        else:
            sql, params = _HYDRATE.format(ids="SELECT value FROM json_each(?)"), (json.dumps(ids),)
        for kind, run_id, key, text, number, name, count in fetchall(sql, params):
            if kind == 3:
                inputs[run_id].append({"digest": text, "name": name, "context": key, "rows": count})
            elif kind == 1:
                values[run_id][1][key] = float("nan") if number is None else number
            else:
                values[run_id][kind][key] = text
        return [
            Run(info=info, params=values[info.id][0], metrics=values[info.id][1], tags=values[info.id][2],
                inputs=inputs[info.id])
            for info in infos
        ]  # fmt: skip

    # -- artifacts and inputs ----------------------------------------------------
    def record_artifact(self, run_id: str, path: str, digest: str, size: int, kind: str) -> None:
        row = {"run_id": run_id, "path": path, "digest": digest, "size": size, "kind": kind}
        with self.db.write() as connection:
            self.db.upsert(
                connection, self.t("artifacts"), [row], keys=("run_id", "path"), update=("digest", "size", "kind")
            )

    def list_artifacts(self, run_id: str) -> list[dict[str, Any]]:
        from sqlalchemy import select

        self.writer.flush_pending()  # buffered rows (the environment file) are read back too
        table = self.t("artifacts")
        with self.db.read() as connection:
            rows = connection.execute(select(table).where(table.c.run_id == run_id).order_by(table.c.path))
            return [row._asdict() for row in rows]

    def artifact_digest(self, run_id: str, path: str) -> str:
        for artifact in self.list_artifacts(run_id):
            if artifact["path"] == path:
                return str(artifact["digest"])
        raise NotFoundError(
            f"run {run_id} has no artifact {path!r}; list them with Client().list_artifacts({run_id!r})"
        )

    def record_input(self, run_id: str, dataset: dict[str, Any], context: str) -> None:
        with self.db.write() as connection:
            self.db.upsert(connection, self.t("datasets"), [dataset], keys=("digest",), update=())
            self.db.upsert(
                connection,
                self.t("run_inputs"),
                [{"run_id": run_id, "dataset_digest": dataset["digest"], "context": context}],
                keys=("run_id", "dataset_digest", "context"),
                update=(),
            )

    def params_of(self, run_id: str) -> dict[str, str]:
        from sqlalchemy import select

        table = self.t("params")
        with self.db.read() as connection:
            return dict(connection.execute(select(table.c.key, table.c.value).where(table.c.run_id == run_id)).all())

    # -- liveness --------------------------------------------------------------
    def reap_dead_runs(self) -> list[str]:
        """Mark runs whose process died as KILLED; returns their ids."""
        dead = [row for row in self._running_runs() if row.id not in self._live_runs and not self._owner_alive(row)]
        if not dead:
            return []
        runs = self.t("runs")
        with self.db.write() as connection:
            for row in dead:
                result = connection.execute(
                    runs.update()
                    .where(runs.c.id == row.id, runs.c.status == RUNNING)
                    .values(status=KILLED, end_time=row.heartbeat)
                )
                if result.rowcount:
                    self.project.events.emit(
                        "run.killed",
                        row.id,
                        {
                            "reason": "process died without ending the run",
                            "host": row.host,
                            "pid": row.pid,
                            "last_heartbeat": row.heartbeat,
                        },
                        connection=connection,
                    )
        return [row.id for row in dead]

    def _running_runs(self) -> list[Any]:
        """Id, host, pid, pid start time and heartbeat of every RUNNING run."""
        if self.db.raw is not None:
            with self.db.raw.transaction() as connection:
                return [_RunningRun(*row) for row in connection.fetchall(_SQLITE_RUNNING, (RUNNING,))]
        from sqlalchemy import select

        runs = self.t("runs")
        with self.db.read() as connection:
            return connection.execute(
                select(runs.c.id, runs.c.host, runs.c.pid, runs.c.pid_started, runs.c.heartbeat).where(
                    runs.c.status == RUNNING
                )
            ).all()

    def _owner_alive(self, row: Any) -> bool:
        """On this host the owning process (pid plus start time) still runs; elsewhere, its heartbeat is fresh."""
        if row.host == HOST:
            return is_process_alive(row.pid, row.pid_started)
        return time.time() - row.heartbeat <= max(30.0, 6 * self.settings.heartbeat_interval_s)

    def _beat(self, connection: Connection) -> None:
        now = time.time()
        if not self._live_runs or now - self._last_beat < self.settings.heartbeat_interval_s:
            return
        if self.db.raw is not None:  # the writer's connection is the driver's (see core.db.direct_write)
            self._beat_statement.execute_many(connection, [{"now": now, "run": run} for run in list(self._live_runs)])
        else:
            runs = self.t("runs")
            connection.execute(runs.update().where(runs.c.id.in_(list(self._live_runs))).values(heartbeat=now))
        self._last_beat = now

    def _record_dropped(self, table: str, row: tuple[Any, ...], error: BaseException) -> None:
        """An event on the run for a row the database refused for good, so that the loss shows in its history."""
        # ascii(): the row may hold what the database refused (NUL, a lone surrogate); their escapes it stores
        key, value, reason = (ascii(text)[:1000] for text in (row[1], row[2], str(error)))
        payload = {"table": table, "key": key, "value": value, "error": reason}
        self.project.events.emit("run.value_dropped", row[0], payload)

    def _record_conflicts(self, connection: Any, conflicts: list[tuple[str, str, str, str]]) -> None:
        """A ``run.value_dropped`` event per param another process had stored with another value first."""
        for run_id, key, kept, dropped in conflicts:
            payload = {"table": "params", "key": ascii(key)[:1000], "value": ascii(dropped)[:1000],
                       "kept": ascii(kept)[:1000],
                       "error": "another process had already stored another value; params are immutable"}
            self.project.events.emit("run.value_dropped", run_id, payload, connection=connection)

    def flush(self) -> None:
        """Write what is buffered; raises ConflictError for a param another process had stored differently."""
        self.writer.flush()

    def close(self) -> None:
        """Write what is buffered. With the database away, it is kept in the spool for the next open, and the
        BackendUnavailableError says where (or, should the spool fail too, what was lost)."""
        try:
            self.writer.close()
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(self._spooled_after(exc)) from None

    def _spooled_after(self, exc: BaseException) -> str:
        try:
            path, rows, ends = self.spool_unwritten()
        except OSError as failure:
            rows, ends = self.writer.unwritten()
            return (f"{exc}; {rows} tracking rows and {ends} run ends of the project at {self.project.root} are "
                    f"lost: keeping them in {self.spool_folder} failed too: {failure}")
        if path is None:
            return str(exc)  # only a heartbeat was unwritten
        return (f"{exc}; {rows} tracking rows and {ends} run ends of the project at {self.project.root} are kept in "
                f"{path} and written when a process next opens the project")


class _RunningRun(NamedTuple):
    id: str
    host: str
    pid: int
    pid_started: float
    heartbeat: float


def _passing(error: BaseException) -> bool:
    """Whether a replay failed on the database's state (away, locked, a deadlock) rather than on the file: only
    a driver's error can be that; anything else (a malformed row, a bug) would fail at every open."""
    if isinstance(error, BackendUnavailableError):
        return True
    driver = type(error).__module__.split(".")[0] in ("sqlalchemy", "sqlite3", "psycopg", "psycopg2")
    return driver and is_transient(error)


def _reject(path: Path, error: BaseException) -> None:
    """Set aside a spool file that cannot be written (not one, or refused by the database), keeping it."""
    rejected = path.with_name(path.name + ".rejected")
    try:
        path.rename(rejected)
    except OSError:
        rejected = path
    _logger().error("loopstack could not write the tracking rows kept in %s and set the file aside as %s: %s",
                    path, rejected, error)


def _info(row: dict[str, Any]) -> RunInfo:
    return RunInfo(
        id=row["id"],
        experiment_id=row["experiment_id"],
        name=row["name"],
        status=row["status"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        parent_id=row["parent_id"],
    )


class _DriverStatement:
    """A search compiled once to the driver's SQL text, with a page's own values put in per call.

    Running a built statement through SQLAlchemy still derives its cache key on every call,
    which cost a search more than SQLite's own work; the text is run as it is instead.
    """

    def __init__(self, query: Any, db: Any) -> None:
        compiled = query.compile(dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True})
        self.sql = str(compiled)
        self.columns = [column.name for column in query.selected_columns]
        values = compiled.construct_params()  # the filter's values, fixed when compiled
        self.names: tuple[str, ...] | None = tuple(compiled.positiontup) if compiled.positional else None
        self.values = [values[name] for name in self.names] if self.names is not None else values

    def bind(self, after: Sequence[Any]) -> tuple[str, Any]:
        """The text and its parameters, with the previous page's last sort values as ``after_<i>``."""
        page = {f"after_{i}": value for i, value in enumerate(after)}
        if self.names is None:
            return self.sql, {**self.values, **page}
        return self.sql, tuple(page.get(name, value) for name, value in zip(self.names, self.values, strict=True))


def _order(query: Any, keys: list[Any], tables: dict[str, Any], after: tuple[bool, ...] | None) -> Any:
    """`query` sorted by `keys` (runs without a value last), then newest first and by id; with `after`
    (which of the previous page's last sort values were missing), only the rows that sort after that row.

    Paging by the last row's values, not by an offset, keeps a run started or changed between two pages
    from shifting the later pages: no run is repeated or skipped.
    """
    from sqlalchemy import and_

    runs = tables["runs"]
    sort: list[tuple[Any, bool]] = []  # (column, descending)
    clauses = []
    for index, key in enumerate(keys):
        field = key.field
        if field.kind == "attributes":
            column = runs.c[field.name]
        else:
            table = tables["latest_metrics" if field.kind == "metrics" else field.kind].alias(f"o{index}")
            query = query.outerjoin(table, and_(table.c.run_id == runs.c.id, table.c.key == field.name))
            column = table.c.value
        clauses.append(column.is_(None))  # runs without the value sort last either way
        clauses.append(column.desc() if key.descending else column.asc())
        sort.append((column, key.descending))
    sort.extend([(runs.c.start_time, True), (runs.c.id, False)])
    clauses.extend([runs.c.start_time.desc(), runs.c.id])
    query = query.add_columns(*(column.label(f"sort_{i}") for i, (column, _) in enumerate(sort)))
    if after is not None:
        query = query.where(_after(sort, after))
    return query.order_by(*clauses)


def _after(sort: list[tuple[Any, bool]], missing: tuple[bool, ...]) -> Any:
    """Rows that sort after the one whose sort values are the parameters ``after_<i>`` (``missing[i]``:
    that value was NULL): equal on the first keys and past it on the next, where NULL sorts last."""
    from sqlalchemy import and_, bindparam, false, or_

    alternatives, equal = [], []
    for i, ((column, descending), was_missing) in enumerate(zip(sort, missing, strict=True)):
        if was_missing:  # nothing sorts after a missing value; only another missing one ties with it
            past, same = false(), column.is_(None)
        else:
            value = bindparam(f"after_{i}", None, type_=column.type)  # a value per page (see _DriverStatement)
            past = or_(column.is_(None), column < value if descending else column > value)
            same = column == value
        alternatives.append(and_(*equal, past))
        equal.append(same)
    return or_(*alternatives)


def _encode_token(after: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": list(after)}).encode()).decode()


def _check_search_arguments(filter_string: Any, max_results: Any) -> None:
    """Refused by name: a wrong type failed deep in the parser or in a comparison, with Python's own words."""
    if filter_string is not None and not isinstance(filter_string, str):
        raise ValidationError(
            f"filter_string={filter_string!r} is a {type(filter_string).__name__}; pass a filter such as "
            "\"metrics.acc > 0.9 and params.lr = '0.01'\", or None for every run"
        )
    if isinstance(max_results, bool) or not isinstance(max_results, int):
        raise ValidationError(f"max_results={max_results!r} is a {type(max_results).__name__}; pass an int, 1 to 50000")
    if not 1 <= max_results <= 50_000:
        raise ValidationError(f"max_results={max_results} is out of range; use 1 to 50000")


def _decode_token(token: str | None, values: int) -> list[Any] | None:
    """The previous page's last sort values, checked to fit a search sorted by `values` values."""
    if not token:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except Exception:
        after = None
    if not isinstance(after, list) or len(after) != values or not all(_is_scalar(value) for value in after):
        raise ValidationError(
            f"invalid page_token {token!r}; pass the token a previous search with the same order_by returned"
        )
    return after


def _is_scalar(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise ValidationError(f"invalid {what} {name!r}: use 1 to 255 characters")
    check_storable(name, f"{what} {name!r}")


_ADJECTIVES = [
    "amber",
    "brave",
    "calm",
    "deft",
    "eager",
    "fair",
    "gentle",
    "hardy",
    "keen",
    "lucid",
    "merry",
    "noble",
    "placid",
    "quick",
    "royal",
    "sunny",
    "tidy",
    "vivid",
    "witty",
    "zesty",
]
_NOUNS = [
    "otter",
    "falcon",
    "lynx",
    "heron",
    "badger",
    "cedar",
    "comet",
    "delta",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "islet",
    "juniper",
    "kestrel",
    "lagoon",
    "maple",
    "nova",
    "orca",
    "pine",
]


def _run_name(run_id: str) -> str:
    number = int(run_id[:8], 16)
    return f"{_ADJECTIVES[number % 20]}-{_NOUNS[(number // 20) % 20]}-{number % 1000:03d}"


__all__ = ["TrackingStore", "DEFAULT_EXPERIMENT", "validate_key"]
