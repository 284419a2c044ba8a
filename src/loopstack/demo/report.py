"""The demo's report: one self-contained HTML page (inline CSS and SVG, no script, no CDN).

It reads everything back from the project, not from the demo's memory: the
event log (timeline, gate and rollout decisions with their evidence), the
registry (model versions and their metrics) and the demo's state file (per
day drift share and served AUC). The same data is embedded as JSON in
``<script id="demo-data" type="application/json">``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from loopstack.demo.config import MODEL
from loopstack.demo.rollout import DECISIONS
from loopstack.demo.runner import explore_commands

SKIP = ("step.", "drift.checked", "performance.checked")
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2430;
padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #dde3ea;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%;font-size:12.5px}td,th{border-bottom:1px solid #e6eaef;padding:4px 6px;
text-align:left;vertical-align:top}th{background:#f5f7fa}.ok{color:#137a3a;font-weight:600}.bad{color:#b42318;
font-weight:600}.muted{color:#6b7685}.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{flex:1;min-width:180px;
border:1px solid #dde3ea;border-radius:8px;padding:.7rem 1rem}.card b{font-size:1.3rem;display:block}
code{background:#f2f4f7;padding:1px 4px;border-radius:4px}svg text{font-size:11px;fill:#4a5565}
details summary{cursor:pointer}pre{white-space:pre-wrap;font-size:11.5px;margin:0}
"""


def write_report(project: Any, world: Any) -> Path:
    """Write ``report.html`` in the project folder and return its path."""
    data = collect(project, world)
    target = Path(project.root) / "report.html"
    target.write_text(render(data), encoding="utf-8")
    return target


def collect(project: Any, world: Any) -> dict[str, Any]:
    """Everything the page shows, as JSON-able data."""
    from loopstack import registry

    events = project.events.list(limit=100_000, newest_first=False)
    days = {int(d): v for d, v in world.state.get("days", {}).items()}
    versions = registry.search_model_versions(MODEL, project=project)
    return {
        "scenario": world.scenario.to_dict(),
        "transactions": len(world.tx),  # generated, not the scenario's requested rows: the console says this number
        "days": [{"day": d, "drift_share": v.get("drift_share"), "drifted": v.get("drifted"),
                  "auc": (v.get("performance") or {}).get("auc"), "brier": (v.get("performance") or {}).get("brier")}
                 for d, v in sorted(days.items())],
        "promotions": world.state.get("promotions", []),
        "rollbacks": world.state.get("rollbacks", []),
        "models": [{"ref": v.ref, "aliases": list(v.aliases), "run_id": v.run_id,
                    "metrics": {k: v.metrics.get(k) for k in ("auc", "average_precision", "brier", "champion_auc",
                                                              "champion_brier")}}
                   for v in sorted(versions, key=lambda v: v.version)],
        "gates": [_event(e) for e in events if e.kind.startswith("gate.")],
        "shadows": [_event(e) for e in events if e.kind in ("rollout.shadow.passed", "rollout.shadow.failed")],
        "decisions": [{**_event(e), "day": world.state.get("decision_days", {}).get(str(e.id))}
                      for e in events if e.kind in DECISIONS],
        "timeline": [_event(e) for e in events if not e.kind.startswith(SKIP)],
        "root": str(project.root),
        "commands": explore_commands(project),
    }


def _event(e: Any) -> dict[str, Any]:
    return {"id": e.id, "time": e.time, "kind": e.kind, "subject": e.subject, "cause": e.cause, "payload": e.payload}


def render(data: dict[str, Any]) -> str:
    s = data["scenario"]
    marks = [(s["drift_day"], "drift starts", "#b42318"), (s["corrupt_day"], "labels corrupted", "#9a6700")]
    marks += [(p["day"], f"promoted {p['version']}", "#137a3a") for p in data["promotions"]]
    marks += [(r["day"], f"rolled back {r['version']}", "#b42318") for r in data["rollbacks"]]
    drift = [(d["day"], d["drift_share"]) for d in data["days"] if d["drift_share"] is not None]
    auc = [(d["day"] - s["label_delay_days"], d["auc"]) for d in data["days"] if _num(d["auc"])]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>loopstack demo report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>loopstack demo: the closed loop on card transactions</h1>",
        f"<p class=muted>{data['transactions']:,} transactions over {s['days']} days; project "
        f"<code>{html.escape(data['root'])}</code></p>",
        _cards(data),
        "<h2>Drift share per day (champion's inputs vs its training data)</h2>",
        line_chart(drift, marks, y_max=1.0, label="share of drifted columns"),
        "<h2>Served model quality per day (AUC on the true, delayed labels)</h2>",
        line_chart(auc, marks, y_min=0.3, y_max=1.0, label="AUC"),
        "<h2>Models: metrics before and after</h2>", _models(data["models"]),
        "<h2>Gate decisions</h2>", _gates(data["gates"]),
        "<h2>Shadow</h2>", _shadows(data["shadows"]),
        "<h2>Canary decisions and their statistics</h2>", _decisions(data["decisions"]),
        "<h2>Timeline of events</h2>", _timeline(data["timeline"]),
        "<h2>Explore</h2>", _explore(data["root"], data["commands"]),
        '<script id="demo-data" type="application/json">',
        json.dumps(data, default=str).replace("</", "<\\/"),
        "</script></body></html>",
    ]
    return "\n".join(parts)


def _cards(data: dict[str, Any]) -> str:
    promoted = ", ".join(f"{p['version']} (day {p['day']})" for p in data["promotions"]) or "none"
    rolled = ", ".join(f"{r['version']} (day {r['day']})" for r in data["rollbacks"]) or "none"
    champion = next((m["ref"] for m in data["models"] if "champion" in m["aliases"]), "?")
    items = [("champion now", champion), ("promoted", promoted), ("rolled back", rolled),
             ("events", f"{len(data['timeline']):,} shown")]
    return "<div class=cards>" + "".join(f"<div class=card><span class=muted>{k}</span><b>{html.escape(str(v))}</b>"
                                         "</div>" for k, v in items) + "</div>"


def line_chart(points: list[tuple[float, float]], marks: list[tuple[int, str, str]], y_min: float = 0.0,
               y_max: float = 1.0, label: str = "", width: int = 1040, height: int = 220) -> str:
    """A line chart with vertical event markers, as inline SVG.

    Examples
    --------
    >>> line_chart([(0, 0.1), (1, 0.5)], [(1, "drift", "red")]).startswith("<svg")
    True
    """
    if not points:
        return "<p class=muted>no data</p>"
    left, right, top, bottom = 44, 12, 28, 24
    xs = [p[0] for p in points] + [m[0] for m in marks]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)

    def x(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def y(v: float) -> float:
        return top + (1 - (min(max(v, y_min), y_max) - y_min) / (y_max - y_min)) * (height - top - bottom)

    out = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{html.escape(label)}">']
    for k in range(5):
        v = y_min + (y_max - y_min) * k / 4
        out.append(f'<line x1={left} x2={width - right} y1={y(v):.1f} y2={y(v):.1f} stroke="#eef1f4"/>'
                   f'<text x=4 y={y(v) + 4:.1f}>{v:.2f}</text>')
    for day in range(int(x0), int(x1) + 1, 2):
        out.append(f'<text x={x(day) - 6:.1f} y={height - 6}>{day}</text>')
    for i, (day, text, color) in enumerate(marks):
        out.append(f'<line x1={x(day):.1f} x2={x(day):.1f} y1={top} y2={height - bottom} stroke="{color}" '
                   f'stroke-dasharray="4 3"/><text x={x(day) + 3:.1f} y={12 + 11 * (i % 2)} '
                   f'style="fill:{color}">{html.escape(text)}</text>')
    path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in points)
    out.append(f'<polyline points="{path}" fill="none" stroke="#2f6feb" stroke-width="2"/>')
    out += [f'<circle cx={x(a):.1f} cy={y(b):.1f} r=2.5 fill="#2f6feb"><title>day {a}: {b:.3f}</title></circle>'
            for a, b in points]
    out.append(f'<text x={left + 4} y={top - 4}>{html.escape(label)}</text></svg>')
    return "".join(out)


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p class=muted>none</p>"
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def _models(models: list[dict[str, Any]]) -> str:
    rows = [[m["ref"], ", ".join(m["aliases"]) or "-", _f(m["metrics"]["auc"]), _f(m["metrics"]["average_precision"]),
             _f(m["metrics"]["brier"], 4), _f(m["metrics"]["champion_auc"]), _f(m["metrics"]["champion_brier"], 4),
             f"<code>{m['run_id'][:12]}</code>"] for m in models]
    return _table(["version", "aliases", "eval AUC", "eval AP", "eval Brier", "champion AUC (same rows)",
                   "champion Brier", "run"], rows) + (
        "<p class=muted>Evaluation rows are the newest labelled day(s) of each training window, as the warehouse "
        "held them; fraud/3's came from the corrupted labels, which is why it looked better than the champion.</p>")


def _gates(gates: list[dict[str, Any]]) -> str:
    rows = [[str(g["id"]), _verdict(g["kind"] == "gate.passed", g["kind"]), str(g["payload"].get("version", "-")),
             _f(g["payload"]["challenger"]["auc"]), _f(g["payload"]["champion"]["auc"]),
             _f(g["payload"]["challenger"]["brier"], 4), _f(g["payload"]["champion"]["brier"], 4),
             str(g["payload"]["eval_rows"]), html.escape(g["payload"]["rule"])] for g in gates]
    return _table(["event", "verdict", "version", "challenger AUC", "champion AUC", "challenger Brier",
                   "champion Brier", "eval rows", "rule"], rows)


def _shadows(shadows: list[dict[str, Any]]) -> str:
    rows = [[str(e["id"]), _verdict(e["kind"].endswith("passed"), e["kind"]), str(p["pairs"]), str(p["errors"]),
             _f(p["agreement"]), _f(p["ks_statistic"], 3), _f(p["ks_p_value"], 4), _f(p["mean_abs_diff"], 4),
             _f(p["latency_p99_delta_ms"], 1)]
            for e in shadows for p in [e["payload"]]]
    return _table(["event", "verdict", "paired requests", "errors", "agreement", "KS statistic", "KS p-value",
                   "mean |score difference|", "p99 ms, challenger - champion"], rows)


def _decisions(decisions: list[dict[str, Any]]) -> str:
    rows = []
    for e in decisions:
        p = e["payload"]
        evidence = "<br>".join(_evidence(x) for x in p["evidence"])
        good = p["action"] in ("advance", "promote")
        action = _verdict(good, p["action"]) if p["action"] != "hold" else "hold"
        rows.append([str(e["id"]), str(e.get("day") or ""), action, str(p["step"] + 1), f"{p['weight']:.0%}",
                     html.escape(p["reason"]), str(p["canary_requests"]), evidence])
    return _table(["event", "day", "decision", "step after", "weight after", "reason", "canary requests",
                   "guardrails (canary - stable, always-valid CI)"], rows)


def _evidence(x: dict[str, Any]) -> str:
    if x["metric"] == "sample_ratio":
        return f"sample ratio: {'flagged' if x.get('flagged') else 'ok'}"
    ci = x.get("diff_ci") or [float("nan")] * 2
    cls = "bad" if x["verdict"] == "worse" else "ok" if x["verdict"] == "better" else "muted"
    return (f"{x['metric']}: <span class={cls}>{x['verdict']}</span> diff {_f(x.get('diff'), 4)} "
            f"[{_f(ci[0], 4)}, {_f(ci[1], 4)}] p={_f(x.get('p_value'), 3)} (n {x.get('n_stable')}/{x.get('n_canary')})")


def _timeline(events: list[dict[str, Any]]) -> str:
    import datetime as dt

    rows = []
    for e in events:
        when = dt.datetime.fromtimestamp(e["time"]).strftime("%H:%M:%S.%f")[:-3]
        payload = html.escape(json.dumps(e["payload"], default=str))
        short = payload if len(payload) < 140 else \
            f"<details><summary>{payload[:120]}...</summary><pre>{payload}</pre></details>"
        rows.append([str(e["id"]), when, f"<code>{e['kind']}</code>", html.escape(e["subject"]),
                     str(e["cause"] or ""), short])
    return _table(["id", "time", "kind", "subject", "cause", "payload"], rows)


def _explore(root: str, commands: list[str]) -> str:
    return "<pre>" + "\n".join(f"loopstack -p {html.escape(root)} {c}" for c in commands) + "</pre>"


def _verdict(good: bool, text: str) -> str:
    return f"<span class={'ok' if good else 'bad'}>{html.escape(text)}</span>"


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and v == v


def _f(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if _num(v) else "-"
