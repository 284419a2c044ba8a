"""The drift report: one self-contained HTML file (inline CSS and SVG, works offline) and the same as JSON."""

from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path
from typing import Any

from loopstack.core.errors import ConfigError
from loopstack.drift.result import ColumnDrift, DriftResult
from loopstack.drift.svg import CURRENT_COLOR, REFERENCE_COLOR, bars

STYLE = """
body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:22px}
.cards{display:flex;gap:1em;margin:1em 0}.card{border:1px solid #ddd;border-radius:6px;padding:.8em 1.2em}
.card b{display:block;font-size:20px}.bad{color:#c0392b}.ok{color:#27ae60}
table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #eee;padding:4px 10px;text-align:left}
.col{display:inline-block;vertical-align:top;margin:0 1.5em 1.5em 0}.col h3{font-size:14px;margin:.3em 0}
.key span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
"""


def report_data(result: DriftResult, title: str = "Drift report") -> dict[str, Any]:
    """The report's content as JSON-ready data: summary, per-column scores and histograms."""
    return {"title": title, "generated_at": time.time(), **result.to_dict(histograms=True)}


def render_html(data: dict[str, Any]) -> str:
    """The HTML page for `report_data` output.

    Examples
    --------
    >>> from loopstack.drift import compare
    >>> page = render_html(report_data(compare({"x": [1.0, 2.0, 3.0]}, {"x": [1.0, 2.0, 4.0]})))
    >>> "<svg" in page and "cdn" not in page.lower()
    True
    """
    verdict = "Data set drift detected" if data["dataset_drift"] else "No data set drift"
    cards = [
        (verdict, "bad" if data["dataset_drift"] else "ok"),
        (f"{data['n_drifted']} of {data['n_columns']} columns drifted", ""),
        (f"share {data['share']:.2f} (alert at {data['drift_share']:.2f})", ""),
    ]
    rows = "".join(_row(c) for c in data["columns"].values())
    gaps = _gaps(data)
    plots = "".join(_plot(c) for c in data["columns"].values())
    # No '<' at all in the script block: '</script' would end it and '<!--<script' would swallow the page.
    payload = json.dumps(data).replace("<", "\\u003c")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(data['title'])}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(data['title'])}</h1>"
        f"<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(data['generated_at']))}</p>"
        "<div class='cards'>" + "".join(f"<div class='card {cls}'><b>{escape(text)}</b></div>" for text, cls in cards)
        + f"</div>{gaps}<table><tr><th>column</th><th>kind</th><th>test</th><th>score</th><th>threshold</th>"
        f"<th>drift</th><th>rows (ref / cur)</th></tr>{rows}</table>"
        f"<p class='key'><span style='background:{REFERENCE_COLOR}'></span>reference"
        f"<span style='background:{CURRENT_COLOR}'></span>current</p>{plots}"
        f"<script type='application/json' id='drift-data'>{payload}</script></body></html>"
    )


def write_report(result: DriftResult, path: str | None = None, json_path: str | None = None,
                 title: str = "Drift report") -> str:
    """Render the report; write the HTML to `path` and the JSON to `json_path` when given."""
    data = report_data(result, title)
    page = render_html(data)
    if path is not None:
        _write(path, page)
    if json_path is not None:
        _write(json_path, json.dumps(data, indent=2))
    return page


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write the report to {path!r}: {error.strerror}; pass a file path in a folder "
                          "that exists and you can write to") from error


def _gaps(data: dict[str, Any]) -> str:
    """The columns only one side has: a vanished column is a data problem, a new one worth knowing."""
    lines = []
    if data.get("missing_columns"):
        names = ", ".join(escape(name) for name in data["missing_columns"])
        lines.append(f"<p class='bad'><b>Missing from the current data</b> (in the reference, not tested): {names}</p>")
    if data.get("new_columns"):
        names = ", ".join(escape(name) for name in data["new_columns"])
        lines.append(f"<p><b>New in the current data</b> (not in the reference, not tested): {names}</p>")
    return "".join(lines)


def _row(column: dict[str, Any]) -> str:
    score = "n/a" if column["score"] is None else f"{column['score']:.4g}"
    if column.get("adjusted") is not None:
        score += f" (adjusted {column['adjusted']:.4g})"
    mark = "<b class='bad'>drift</b>" if column["drifted"] else "<span class='ok'>ok</span>"
    cells = [escape(column["column"]), column["kind"], column["test"], score, f"{column['threshold']:g}", mark,
             f"{column['n_reference']:,} / {column['n_current']:,}"]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _plot(column: dict[str, Any]) -> str:
    histogram = column.get("histogram")
    if not histogram:
        return ""
    svg = bars(histogram["labels"], histogram["reference"], histogram["current"])
    name = escape(column["column"])
    return f"<div class='col'><h3>{name} &middot; {escape(column['test'])}</h3>{svg}</div>"


__all__ = ["ColumnDrift", "render_html", "report_data", "write_report"]
