"""Log segments read once: the rollout controller's incremental view of its logs.

The traffic, feedback and prediction logs are folders of Parquet segments,
each written whole under a temporary name and renamed into place, never
appended to (`TrafficLog.flush`, `PredictionLog.flush`). A canary judged
every few seconds for days would otherwise read every segment again on each
tick, so `SegmentCache` keeps the tables it read, keyed by path with the
file's size and mtime as a guard (a file replaced in place is read again),
and reads only the files it has not seen. `ControllerLogs` holds one cache
per log with only the columns and rows the controller uses.

Nothing here is stored: a new controller (a restart, another process) starts
empty and reads every segment once; the deployment's stored state is what
carries a rollout across restarts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger("loopstack.rollout")
Stamp = tuple[int, int]  # (size, mtime_ns) of a segment file when it was read
TRAFFIC_COLUMNS = ["request_id", "time", "variant", "ok", "status", "latency_ms", "deployment_version"]


class SegmentCache:
    """The tables of log segments already read, so that each file is read once.

    One cache serves one listing (one log folder): files missing from a call's
    listing are forgotten.

    Parameters
    ----------
    read : callable
        Reads one segment file into the table to keep (only what the caller needs of it).

    Examples
    --------
    >>> import tempfile
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> folder = Path(tempfile.mkdtemp())
    >>> pq.write_table(pa.table({"x": [1, 2]}), folder / "1.parquet")
    >>> cache = SegmentCache(pq.read_table)
    >>> [t.num_rows for t in cache.tables(sorted(folder.glob("*.parquet")))]
    [2]
    >>> pq.write_table(pa.table({"x": [3]}), folder / "2.parquet")
    >>> [t.num_rows for t in cache.tables(sorted(folder.glob("*.parquet")))], cache.reads
    ([2, 1], 2)
    """

    def __init__(self, read: Callable[[Path], pa.Table]) -> None:
        self.read = read
        self.reads = 0  # files read so far
        self._kept: dict[Path, tuple[Stamp, pa.Table]] = {}
        self._skipped: dict[Path, Stamp] = {}

    def tables(self, files: Iterable[Path]) -> list[pa.Table]:
        """The table of each of `files` not skipped, in order, reading only those not read before (or changed)."""
        kept: dict[Path, tuple[Stamp, pa.Table]] = {}
        skipped: dict[Path, Stamp] = {}
        for path in files:
            stat = os.stat(path)
            stamp = (stat.st_size, stat.st_mtime_ns)
            if self._skipped.get(path) == stamp:
                skipped[path] = stamp
                continue
            entry = self._kept.get(path)
            if entry is None or entry[0] != stamp:
                table = self._read(path)
                self.reads += 1
                if table is None:  # torn: skipped until the file changes
                    skipped[path] = stamp
                    continue
                entry = (stamp, table)
            kept[path] = entry
        self._kept, self._skipped = kept, skipped
        return [table for _, table in kept.values()]

    def _read(self, path: Path) -> pa.Table | None:
        """The segment's table; None, with a warning, for a file that is not Parquet at all.

        Segments are renamed into place whole, so only a crash of the machine (a file renamed before its
        bytes reached the disk) leaves one empty or cut short; it must not stop every later tick. A readable
        file that fails otherwise (a column missing) is an error worth raising.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return self.read(path)
        except (OSError, pa.ArrowException):
            try:
                pq.read_metadata(path)
            except (OSError, pa.ArrowException) as error:
                logger.warning("skipping the unreadable log segment %s (%s)", path, error)
                return None
            raise

    def skip(self, unneeded: Callable[[pa.Table], bool]) -> int:
        """Drop the kept tables that `unneeded` says no later call needs, and skip their files from now on.

        Returns how many were dropped. Only the caller knows when a skipped file may matter again
        (a window that moves back); it calls `unskip` then.
        """
        gone = [path for path, (_, table) in self._kept.items() if unneeded(table)]
        for path in gone:
            self._skipped[path] = self._kept.pop(path)[0]
        return len(gone)

    def unskip(self) -> None:
        """Read the skipped files again on the next call."""
        self._skipped.clear()


class ControllerLogs:
    """What `RolloutController` reads of a log folder: requests, numeric feedback, logged outputs.

    Each segment is read once per instance; the tables returned are the same,
    row for row and in the same order, as reading afresh every segment the
    window below keeps (`read_traffic_log`, `read_feedback`,
    `read_prediction_log`) and then selecting the same rows and columns.

    Segments of any of the three logs written (by their names' time) more than
    `SINCE_SLACK_S` before the rollout's start are neither read nor kept
    (`segments_since`, as `read_traffic_log` skips them), so neither a new
    controller nor one living through many rollouts reads every record ever
    written; when a new rollout starts (a later ``since``), the traffic
    segments already kept with no request at or after it are dropped too. A label
    or an output written before the start can still belong to a request
    logged after it (one in flight when the rollout began), which is what the
    slack covers: a request answered up to a minute after it arrived.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = Path(log_dir)
        self.traffic = SegmentCache(_traffic_segment)
        self.feedback = SegmentCache(_feedback_segment)
        self.predictions = SegmentCache(_prediction_segment)
        self._since: float | None = None

    @property
    def reads(self) -> int:
        """Segment files read so far, all logs together."""
        return self.traffic.reads + self.feedback.reads + self.predictions.reads

    def requests(self, endpoint: str, since: float | None) -> pa.Table:
        """Live (not mirrored) requests to `endpoint` logged at or after `since`, with `TRAFFIC_COLUMNS`."""
        import pyarrow as pa

        from loopstack.rollout.trafficlog import rows_since, segments_since, traffic_schema, traffic_segments

        self._window(since)
        tables = self.traffic.tables(segments_since(traffic_segments(self.log_dir, endpoint), since))
        if not tables:
            return traffic_schema().empty_table().select(TRAFFIC_COLUMNS)
        return rows_since(pa.concat_tables(tables), since)

    def labels(self) -> pa.Table:
        """Feedback rows with a numeric value (request_id, label_value), oldest first."""
        import pyarrow as pa

        from loopstack.rollout.trafficlog import segments_since
        from loopstack.serving.predlog import feedback_segments

        tables = self.feedback.tables(segments_since(feedback_segments(self.log_dir), self._since))
        return pa.concat_tables(tables) if tables else pa.table({"request_id": pa.array([], pa.string()),
                                                                 "label_value": pa.array([], pa.float64())})

    def outputs(self, endpoint: str) -> pa.Table | None:
        """Row 0 of each logged prediction of `endpoint` (request_id, variant, outputs); None before the first."""
        import pyarrow as pa

        from loopstack.rollout.trafficlog import segments_since
        from loopstack.serving.predlog import prediction_segments

        tables = self.predictions.tables(segments_since(prediction_segments(self.log_dir, endpoint), self._since))
        return pa.concat_tables(tables, promote_options="permissive") if tables else None

    def _window(self, since: float | None) -> None:
        """Skip the traffic segments with nothing at or after a new `since`: an earlier rollout's requests."""
        from loopstack.rollout.trafficlog import rows_since

        if since == self._since:
            return
        if since is None or (self._since is not None and since < self._since):
            self.traffic.unskip()  # the window reaches back: skipped segments may count again
        else:
            self.traffic.skip(lambda table: rows_since(table, since).num_rows == 0)
        self._since = since


def _traffic_segment(path: Path) -> pa.Table:
    import pyarrow.compute as pc

    from loopstack.rollout.trafficlog import read_traffic_segment

    table = read_traffic_segment(path, [*TRAFFIC_COLUMNS, "shadow"])
    return table.filter(pc.invert(table["shadow"])).select(TRAFFIC_COLUMNS)


def _feedback_segment(path: Path) -> pa.Table:
    import pyarrow.compute as pc

    from loopstack.serving.predlog import read_feedback_segment

    table = read_feedback_segment(path, ["request_id", "label_value"])
    return table.filter(pc.is_valid(table["label_value"]))  # a non-numeric label never counts, nor overrides


def _prediction_segment(path: Path) -> pa.Table:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["request_id", "row", "variant", "outputs"])
    return table.filter(pc.equal(table["row"], 0)).select(["request_id", "variant", "outputs"])


__all__ = ["ControllerLogs", "SegmentCache"]
