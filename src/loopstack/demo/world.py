"""The world the platform serves: card traffic replayed day by day through the model server.

`World` owns the generated data, the in-process server and a small JSON
state file (the replay position, the champion), so a process killed at any
point continues from the last finished chunk. Traffic goes to the deployment
``fraud-endpoint`` (`loopstack.rollout.Deployments`): the server splits it
between champion and challenger, mirrors a shadow and logs every request, as a
production server would; the world only follows which variant answered. One
`advance()` sends a quarter of a day of transactions; at the end of each day
the delayed labels arrive (``POST /v1/feedback``, and the labelled rows land
in the warehouse), the nightly card-stats job runs and is materialized, and
the drift monitor compares the day's logged inputs with the champion's
training data. Loop actions call `advance()` too: a shadow or a canary waits
for traffic, and traffic is what the world makes.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loopstack.demo import features as fs
from loopstack.demo.config import ENDPOINT, FEATURES, MODEL, MONITOR, Scenario
from loopstack.demo.data import DAY_S, day_start
from loopstack.demo.training import scores

STATE = ".loopstack-demo"


class World:
    """Replay the generated transactions through the server, one chunk at a time."""

    def __init__(self, project: Any, scenario: Scenario, tx: Any, snapshots: Any,
                 on_day: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.project = project
        self.root = Path(project.root)
        self.scenario = scenario
        self.tx = tx
        self.snapshots = snapshots
        self.on_day = on_day
        self.state = load_state(self.root)
        self.server: Any = None
        self._monitor: Any = None
        self._by_day = {int(d): g for d, g in tx.groupby("day")}

    # -- state -----------------------------------------------------------------------------
    @property
    def day(self) -> int:
        return int(self.state["day"])

    @property
    def finished(self) -> bool:
        return self.day >= self.scenario.days

    def save(self) -> None:
        save_state(self.root, self.state)

    @property
    def log_dir(self) -> Path:
        return self.root / ".loopstack" / "logs"

    # -- server ----------------------------------------------------------------------------
    def start_server(self) -> None:
        """Serve the deployment (created on the first start, serving the champion); a restart reloads it."""
        from loopstack.core.errors import NotFoundError
        from loopstack.demo.server import InProcessServer
        from loopstack.serving import ServerSettings

        deployments = self.project.deployments
        try:
            deployments.get(ENDPOINT)
        except NotFoundError:
            deployments.create(ENDPOINT, self.state["champion"], primary_metric="brier",
                               reason="the demo's first champion")
        settings = ServerSettings(log_dir=str(self.log_dir), log_flush_s=0.25, predict_threads=1)
        self.server = InProcessServer([], settings, deployments=deployments)
        self.server.start()
        self.follow()

    def deployment(self) -> Any:
        return self.project.deployments.get(ENDPOINT)

    def follow(self) -> Any:
        """Make the server apply the deployment's latest version now; note the split in the state file.

        The state's ``routing`` (strategy, champion and challenger variants, the challenger's
        weight) is what the world reports; its request counts restart with each new strategy
        or challenger.
        """
        d = self.deployment()
        self.server.sync_deployments()
        routing = {"mode": d.strategy, "champion": d.champion, "challenger": d.challenger,
                   "weight": d.weights.get(d.challenger, 0.0) if d.challenger else 0.0}
        old = self.state.get("routing", {})
        if (old.get("mode"), old.get("challenger")) != (routing["mode"], routing["challenger"]):
            self.state["counts"] = {}
        self.state["routing"] = routing
        self.save()
        return d

    def flush_log(self) -> None:
        self.server.flush_logs()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    # -- traffic ---------------------------------------------------------------------------
    def advance(self) -> dict[str, Any]:
        """Send the next chunk of transactions; at a day's end run the nightly jobs. Returns what happened."""
        if self.finished:
            from loopstack.core.errors import ConflictError

            raise ConflictError(f"the replay has ended at day {self.day}; start a fresh demo with --fresh")
        day, chunk = self.day, int(self.state["chunk"])
        if chunk == 0:
            self.state.setdefault("day_started", {})[str(day)] = time.time() - 1.0
        rows = self._chunk(day, chunk)
        answers = self._send(rows, day_start(day) + np.timedelta64(chunk * DAY_S // self.scenario.chunks_per_day, "s"))
        self._count(answers)
        summary = {"day": day, "chunk": chunk, "requests": len(answers)}
        if chunk + 1 < self.scenario.chunks_per_day:
            self.state["chunk"] = chunk + 1
        else:
            summary.update(self._end_of_day(day))
            self.state["day"], self.state["chunk"] = day + 1, 0
        self.save()
        if summary.get("end_of_day") and self.on_day is not None:
            self.on_day(day, summary)
        return summary

    def _chunk(self, day: int, chunk: int) -> Any:
        rows = self._by_day[day]
        edges = np.linspace(0, len(rows), self.scenario.chunks_per_day + 1).astype(int)
        return rows.iloc[edges[chunk]:edges[chunk + 1]]

    def _send(self, rows: Any, now: Any) -> list[Any]:
        card = rows.card_id.to_numpy()
        online = fs.online_features(self.project.feature_store, card, _py(now))
        matrix = np.column_stack([online[c] if c in online else rows[c].to_numpy(float) for c in FEATURES])
        requests = [(f"tx{tx_id}", [None if np.isnan(v) else float(v) for v in values])
                    for tx_id, values in zip(rows.tx_id.to_numpy(), matrix, strict=True)]
        return self.server.predict(f"/v1/endpoints/{ENDPOINT}:predict", requests)

    def _count(self, answers: list[Any]) -> None:
        """Requests and errors per role (``stable``: the champion, ``canary``: the challenger) as clients saw them."""
        counts = self.state.setdefault("counts", {})
        challenger = self.state["routing"].get("challenger")
        for answer in answers:
            role = "canary" if challenger is not None and answer.variant == challenger else \
                "stable" if answer.variant else "unanswered"
            entry = counts.setdefault(role, {"requests": 0, "errors": 0})
            entry["requests"] += 1
            entry["errors"] += int(answer.status != 200)

    # -- nightly jobs ----------------------------------------------------------------------
    def _end_of_day(self, day: int) -> dict[str, Any]:
        s = self.scenario
        labelled = day - s.label_delay_days
        out: dict[str, Any] = {"end_of_day": True}
        if labelled >= s.history_days:
            out["labels"] = self._labels_arrive(labelled)
        fs.write_snapshots(self.root, self.snapshots, range(day, day + 1))
        self.project.feature_store.materialize_incremental(end=_py(day_start(day + 1)), progress=False)
        self.flush_log()
        out.update(self._monitor_day(day))
        return out

    def _labels_arrive(self, day: int) -> int:
        """The true labels of `day` reach the server; the warehouse gets them too (or, after the ETL broke, rules)."""
        rows = self._by_day[day]
        feedback = [{"request_id": f"tx{i}", "label": int(y)} for i, y in zip(rows.tx_id, rows.is_fraud, strict=True)]
        for start in range(0, len(feedback), 2000):
            self.server.post("/v1/feedback", feedback[start:start + 2000])
        warehouse = rows[["tx_id", "card_id", "event_timestamp", "day", "amount", "hour", "merchant_risk",
                          "distance_km"]].copy()
        corrupted = day >= self.scenario.corrupt_day
        warehouse["is_fraud"] = (rows.rule_flag if corrupted else rows.is_fraud).to_numpy()
        fs.write_day(self.root, fs.TRANSACTIONS, day, warehouse)
        return len(rows)

    def _monitor_day(self, day: int) -> dict[str, Any]:
        """Drift of the day's logged champion inputs against the champion's training data; performance once labelled."""
        from loopstack.drift import Monitor

        since = self.state.get("day_started", {}).get(str(day - 1), 0.0)
        log = self.answered(self.read_log("predictions", since, ENDPOINT), since)
        log["tx_id"] = log.request_id.str.slice(2).astype("int64")
        today = log[log.tx_id.isin(self._by_day[day].tx_id)]
        current = {f: today[f"inputs.{f}"].to_numpy(float) for f in FEATURES}
        if self._monitor is None or self._monitor.name != MONITOR or self.state.get("_ref") != self.state["reference"]:
            self._monitor = Monitor(self.project, MONITOR, reference=self.reference())
            self.state["_ref"] = self.state["reference"]
        result = self._monitor.run(current)
        out = {"drift_share": result.share, "drifted": result.drifted_columns, "dataset_drift": result.dataset_drift}
        labelled = day - self.scenario.label_delay_days
        if labelled >= self.scenario.history_days:
            labels = self.read_log("feedback", self.state.get("day_started", {}).get(str(day), 0.0))
            out["performance"] = self._performance(log, labelled, labels)
        self.state.setdefault("days", {})[str(day)] = out
        return out

    def _performance(self, log: Any, day: int, labels: Any) -> dict[str, float]:
        served = log[log.tx_id.isin(self._by_day[day].tx_id)]
        joined = served.merge(labels[["request_id", "label_value"]].drop_duplicates("request_id"), on="request_id")
        score = np.array([p[1] for p in joined["outputs.predict_proba"]])
        metrics = scores(score, joined.label_value.to_numpy())
        payload = {"day": day, "rows": len(joined), "metrics": metrics, "version": self.state["champion"]}
        self.project.events.emit("performance.checked", MODEL, payload)
        return metrics

    def answered(self, log: Any, since: float) -> Any:
        """The logged predictions whose answer went back to a client: a shadow's mirrored copy is left out.

        The copy has the request's id, so the traffic log (variant and shadow flag per request)
        tells the two apart.
        """
        import pyarrow.compute as pc

        from loopstack.rollout.trafficlog import read_traffic_log

        traffic = read_traffic_log(self.log_dir, ENDPOINT, since=since)
        live = traffic.filter(pc.invert(traffic["shadow"])).select(["request_id", "variant"]).to_pandas()
        return log.merge(live.drop_duplicates(), on=["request_id", "variant"])

    def read_log(self, kind: str, since: float, model: str | None = None) -> Any:
        """Prediction-log or feedback segments written since `since` (epoch seconds), as one frame.

        Segment names start with their write time in nanoseconds, so a day's
        monitor reads that day's files only, not the whole history.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = self.log_dir / kind / (model or "")
        files = [f for f in sorted(folder.glob("**/*.parquet")) if int(f.name.split("-")[0]) >= since * 1e9]
        if not files:
            from loopstack.serving import read_feedback

            return read_feedback(self.log_dir).schema.empty_table().to_pandas() if kind == "feedback" else None
        tables = [pq.read_table(f) for f in files]
        return pa.concat_tables(tables, promote_options="permissive").flatten().to_pandas()

    def reference(self) -> Any:
        """The champion's training frame (inputs only): what the drift monitor compares with."""
        import pandas as pd

        frame = pd.read_parquet(io.BytesIO(self.project.artifacts.get_bytes(self.state["reference"])))
        return {f: frame[f].to_numpy(float) for f in FEATURES}


def load_state(root: Path) -> dict[str, Any]:
    path = root / STATE
    if path.exists() and path.stat().st_size:
        return dict(json.loads(path.read_text()))
    return {}


def save_state(root: Path, state: dict[str, Any]) -> None:
    """Write the state file atomically (a kill never leaves half of it)."""
    path = root / STATE
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(json.dumps(state, default=str, indent=1))
    tmp.replace(path)


def _py(value: Any) -> Any:
    import pandas as pd

    return pd.Timestamp(value).to_pydatetime()
