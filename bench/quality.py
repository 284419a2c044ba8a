"""Data quality vs Great Expectations 1.x and pandera: same data, same 10 checks, same answers.

Writes 1,000,000 rows x 10 columns to Parquet with a known number of planted
violations per check, then times each tool from reading the file to having
every check's unexpected count (best and median of ``--repeat`` runs, each in
its own warm process after imports). loopstack runs in ``.venv``; the anchors
run in their own virtualenvs under ``bench/.anchors`` (``bash bench/anchors.sh
great_expectations pandera``). All three must report exactly the planted
counts. Then the same suite runs over a 10x larger Parquet folder in a fresh
process, streamed by DuckDB, and its peak RSS is reported next to the size the
data would take in memory::

    bash bench/anchors.sh great_expectations pandera
    .venv/bin/python bench/quality.py                  # full run (a few minutes)
    .venv/bin/python bench/quality.py --rows 100000 --folder-files 2 --repeat 1   # smoke run
    .venv/bin/python bench/quality.py --no-anchor      # loopstack alone

The suite: 3 not-null, 3 between, unique, string length, in-set, regex.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "quality"
ANCHORS = HERE / ".anchors"
GOALS = {"great_expectations": 10.0, "pandera": 3.0}

STATUSES = ["new", "paid", "shipped", "cancelled"]
SKU = r"^[A-Z]{3}-\d{4}$"
# check label -> planted violations per million rows
PLANTED = {
    "not_null(customer)": 1234,
    "not_null(amount)": 555,
    "not_null(sku)": 432,
    "between(amount)": 777,
    "between(quantity)": 321,
    "between(age)": 444,
    "unique(id)": 1000,  # 500 ids repeated once: every row of a repeated value counts
    "string_length(comment)": 654,
    "in_set(status)": 999,
    "regex(sku)": 888,
}
SUITE = [  # (kind, column, params): the one suite every tool runs
    ("not_null", "customer", {}),
    ("not_null", "amount", {}),
    ("not_null", "sku", {}),
    ("between", "amount", {"min": 0, "max": 10000}),
    ("between", "quantity", {"min": 1, "max": 100}),
    ("between", "age", {"min": 18, "max": 99}),
    ("unique", "id", {}),
    ("string_length", "comment", {"min": 1, "max": 20}),
    ("in_set", "status", {"values": STATUSES}),
    ("regex", "sku", {"pattern": SKU}),
]


# -- data --------------------------------------------------------------------------
def make_part(rows: int, seed: int, id_offset: int) -> Any:
    """One Arrow table with exactly PLANTED (scaled to `rows`) violations, on disjoint rows."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    scale = rows / 1_000_000
    n = {label: round(count * scale) for label, count in PLANTED.items()}
    slots = rng.permutation(rows)  # disjoint row sets per violation, so counts never overlap
    bounds = np.cumsum([0, *n.values()])
    rows_for = {label: slots[bounds[i] : bounds[i + 1]] for i, label in enumerate(PLANTED)}

    ids = np.arange(id_offset, id_offset + rows, dtype=np.int64)
    dup = rows_for["unique(id)"]
    ids[dup[: len(dup) // 2]] = ids[dup[len(dup) // 2 :]]
    amount = rng.uniform(0, 10000, rows).round(2)
    amount[rows_for["between(amount)"]] = -rng.uniform(1, 100, len(rows_for["between(amount)"]))
    quantity = rng.integers(1, 101, rows)
    quantity[rows_for["between(quantity)"]] = rng.choice([0, 101, 500], len(rows_for["between(quantity)"]))
    age = rng.integers(18, 100, rows)
    age[rows_for["between(age)"]] = rng.choice([5, 17, 100, 130], len(rows_for["between(age)"]))
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    sku = np.char.add(
        np.char.add(letters[rng.integers(0, 26, rows)], letters[rng.integers(0, 26, rows)]),
        np.char.add(letters[rng.integers(0, 26, rows)], np.char.mod("-%04d", rng.integers(0, 10000, rows))),
    ).astype(object)
    sku[rows_for["regex(sku)"]] = np.char.mod("ab-%d", rng.integers(0, 99999, len(rows_for["regex(sku)"])))
    status = np.array(STATUSES, dtype=object)[rng.integers(0, 4, rows)]
    status[rows_for["in_set(status)"]] = "unknown"
    comment = np.char.mod("note %06d", rng.integers(0, 10**6, rows)).astype(object)
    comment[rows_for["string_length(comment)"]] = "this comment is far too long to pass"
    customer = np.char.mod("cust-%07d", rng.integers(0, 10**7, rows)).astype(object)

    def nulled(values: Any, label: str) -> Any:
        mask = np.zeros(rows, dtype=bool)
        mask[rows_for[label]] = True
        return pa.array(values, mask=mask)

    return pa.table(
        {
            "id": ids,
            "customer": nulled(customer, "not_null(customer)"),
            "amount": nulled(amount, "not_null(amount)"),
            "quantity": quantity,
            "age": age,
            "status": status.tolist(),
            "sku": nulled(sku, "not_null(sku)"),
            "comment": comment.tolist(),
            "score": rng.normal(size=rows),
            "country": np.array(["FR", "DE", "US", "JP"], dtype=object)[rng.integers(0, 4, rows)].tolist(),
        }
    )


def write_data(rows: int, folder_files: int) -> tuple[Path, Path]:
    """The single file and the folder of `folder_files` files of `rows` rows each (reused when present)."""
    import pyarrow.parquet as pq

    single = WORK / f"orders_{rows}.parquet"
    folder = WORK / f"orders_{rows}x{folder_files}"
    if not single.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        pq.write_table(make_part(rows, 0, 0), single)
    if folder_files and not (folder / f"part-{folder_files - 1:03d}.parquet").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(folder_files):
            pq.write_table(make_part(rows, 100 + index, index * rows), folder / f"part-{index:03d}.parquet")
    os.sync()  # no writeback of freshly written data competing with the first timed run
    return single, folder


def expected(rows: int, files: int = 1) -> dict[str, int]:
    return {label: round(count * rows / 1_000_000) * files for label, count in PLANTED.items()}


# -- loopstack ---------------------------------------------------------------------
def loopstack_suite() -> Any:
    from loopstack import quality as q

    classes = {"not_null": q.NotNull, "between": q.Between, "unique": q.Unique, "string_length": q.StringLength,
               "in_set": q.InSet, "regex": q.Regex}  # fmt: skip
    return q.Suite("bench", [classes[kind](column, **params) for kind, column, params in SUITE])


def run_loopstack(path: Path, repeat: int) -> dict[str, Any]:
    suite = loopstack_suite()
    times, counts = [], {}
    for _ in range(repeat):
        start = time.perf_counter()
        result = suite.run(path)
        times.append(time.perf_counter() - start)
        counts = {r.label: r.unexpected_count for r in result.results}
        assert not any(r.error for r in result.results), [r.error for r in result.results]
    import duckdb

    return {"times": times, "counts": counts, "version": f"loopstack (duckdb {duckdb.__version__})"}


def folder_worker(path: str, memory_limit: str | None) -> None:
    """Run the suite once over a folder in this fresh process and print time, counts and peak RSS."""
    from loopstack.quality import configure

    configure(memory_limit=memory_limit)
    suite = loopstack_suite()
    start = time.perf_counter()
    result = suite.run(path)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    counts = {r.label: r.unexpected_count for r in result.results}
    print(json.dumps({"time": elapsed, "counts": counts, "peak_rss": peak, "rows": result.row_count}))


# -- anchors (run in their own venvs) ------------------------------------------------
PANDERA = r"""
import json, sys, time, statistics
import pandas as pd, pandera.pandas as pa
from importlib.metadata import version
path, repeat, suite = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
checks = {}
nullable = {}
for kind, column, p in suite:
    nullable.setdefault(column, True)
    if kind == "not_null": nullable[column] = False
    elif kind == "between": checks.setdefault(column, []).append(pa.Check.in_range(p["min"], p["max"]))
    elif kind == "string_length": checks.setdefault(column, []).append(pa.Check.str_length(p["min"], p["max"]))
    elif kind == "in_set": checks.setdefault(column, []).append(pa.Check.isin(p["values"]))
    elif kind == "regex": checks.setdefault(column, []).append(pa.Check.str_matches(p["pattern"]))
uniques = {column for kind, column, p in suite if kind == "unique"}
schema = pa.DataFrameSchema({c: pa.Column(None, checks=checks.get(c, []), nullable=nullable[c], unique=c in uniques)
                             for c in nullable})
names = {"not_nullable": "not_null", "field_uniqueness": "unique", "in_range": "between", "str_length": "string_length",
         "isin": "in_set", "str_matches": "regex"}
times = []
for _ in range(repeat):
    start = time.perf_counter()
    frame = pd.read_parquet(path)
    try:
        schema.validate(frame, lazy=True)
        cases = None
    except pa.errors.SchemaErrors as error:
        cases = error.failure_cases
    times.append(time.perf_counter() - start)
counts = {}
if cases is not None:
    for (column, check), group in cases.groupby(["column", "check"]):
        counts[names[str(check).split("(")[0]] + "(" + column + ")"] = len(group)
print(json.dumps({"times": times, "counts": counts, "version": "pandera " + version("pandera")}))
"""

GREAT_EXPECTATIONS = r"""
import json, sys, time, logging
logging.disable(logging.WARNING)
import pandas as pd, great_expectations as gx
from importlib.metadata import version
path, repeat, suite = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
E = gx.expectations
def expectation(kind, column, p):
    if kind == "not_null": return E.ExpectColumnValuesToNotBeNull(column=column)
    if kind == "between": return E.ExpectColumnValuesToBeBetween(column=column, min_value=p["min"], max_value=p["max"])
    if kind == "unique": return E.ExpectColumnValuesToBeUnique(column=column)
    if kind == "string_length":
        return E.ExpectColumnValueLengthsToBeBetween(column=column, min_value=p["min"], max_value=p["max"])
    if kind == "in_set": return E.ExpectColumnValuesToBeInSet(column=column, value_set=p["values"])
    if kind == "regex": return E.ExpectColumnValuesToMatchRegex(column=column, regex=p["pattern"])
times = []
for i in range(repeat):
    start = time.perf_counter()
    frame = pd.read_parquet(path)
    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("pandas").add_dataframe_asset("orders")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    expectations = gx.ExpectationSuite(name="bench", expectations=[expectation(*item) for item in suite])
    result = batch.validate(expectations, result_format="BASIC")
    times.append(time.perf_counter() - start)
names = {"expect_column_values_to_not_be_null": "not_null", "expect_column_values_to_be_between": "between",
         "expect_column_values_to_be_unique": "unique", "expect_column_value_lengths_to_be_between": "string_length",
         "expect_column_values_to_be_in_set": "in_set", "expect_column_values_to_match_regex": "regex"}
counts = {}
for r in result.results:  # results do not keep the suite's order
    config = r.expectation_config
    counts[names[config.type] + "(" + config.kwargs["column"] + ")"] = int(r.result.get("unexpected_count", 0) or 0)
print(json.dumps({"times": times, "counts": counts, "version": "great_expectations " + version("great_expectations")}))
"""


def run_anchor(name: str, script: str, path: Path, repeat: int) -> dict[str, Any] | None:
    python = ANCHORS / name / "bin" / "python"
    if not python.exists():
        print(f"  {name}: not installed; run `bash bench/anchors.sh {name}`", file=sys.stderr)
        return None
    proc = subprocess.run(
        [str(python), "-c", script, str(path), str(repeat), json.dumps(SUITE)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        print(f"  {name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--folder-files", type=int, default=10, help="files of --rows rows in the folder run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-anchor", action="store_true")
    parser.add_argument("--folder-worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory-limit", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.folder_worker:
        folder_worker(args.folder_worker, args.memory_limit)
        return
    sys.path.insert(0, str(ROOT / "src"))
    single, folder = write_data(args.rows, args.folder_files)
    want = expected(args.rows)
    print(f"data: {single} ({args.rows:,} rows x 10 columns, {single.stat().st_size / 2**20:.1f} MiB)")
    runs = {"loopstack": run_loopstack(single, args.repeat)}
    if not args.no_anchor:
        for name, script in (("pandera", PANDERA), ("great_expectations", GREAT_EXPECTATIONS)):
            outcome = run_anchor(name, script, single, args.repeat)
            if outcome:
                runs[name] = outcome
    ok = report(runs, want)
    if args.folder_files:
        ok = folder_report(folder, args.rows, args.folder_files) and ok
    sys.exit(0 if ok else 1)


def report(runs: dict[str, dict[str, Any]], want: dict[str, int]) -> bool:
    ok = True
    print(f"\n{'check':<24}{'planted':>9}" + "".join(f"{name:>20}" for name in runs))
    for label, count in want.items():
        cells = [run["counts"].get(label, 0) for run in runs.values()]
        ok &= all(cell == count for cell in cells)
        print(f"{label:<24}{count:>9}" + "".join(f"{cell:>20}" for cell in cells))
    print("same unexpected counts as planted on every tool:", "yes" if ok else "NO")
    base = min(runs["loopstack"]["times"])
    print(f"\n{'tool':<40}{'best s':>9}{'median s':>10}{'vs loopstack':>14}{'goal':>7}")
    for name, run in runs.items():
        best, median = min(run["times"]), statistics.median(run["times"])
        goal = f">={GOALS[name]:.0f}x" if name in GOALS else ""
        print(f"{run['version']:<40}{best:>9.3f}{median:>10.3f}{best / base:>13.1f}x{goal:>7}")
        if name in GOALS and best / base < GOALS[name]:
            print(f"  goal missed: {name} is only {best / base:.1f}x slower")
    return ok


def folder_report(folder: Path, rows: int, files: int) -> bool:
    import pyarrow.parquet as pq

    metas = [pq.ParquetFile(p).metadata for p in folder.glob("*.parquet")]
    in_memory = sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups))
    first = sorted(folder.glob("*.parquet"))[0]
    as_pandas = int(pq.read_table(first).to_pandas().memory_usage(deep=True).sum()) * len(metas)
    on_disk = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    print(
        f"\nfolder: {folder} ({files} files, {on_disk / 2**20:.0f} MiB on disk, {in_memory / 2**20:.0f} MiB "
        f"uncompressed, about {as_pandas / 2**30:.1f} GiB as a pandas DataFrame)"
    )
    same = True
    for limit in (None, "256MB"):
        command = [sys.executable, __file__, "--folder-worker", str(folder)]
        command += ["--memory-limit", limit] if limit else []
        proc = subprocess.run(command, capture_output=True, text=True, check=True)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        equal = out["counts"] == expected(rows, files)
        same &= equal
        print(
            f"loopstack over {out['rows']:,} rows, DuckDB memory_limit={limit or 'default'}: {out['time']:.2f} s, "
            f"peak RSS {out['peak_rss'] / 2**20:.0f} MiB (fresh process); counts equal planted: "
            f"{'yes' if equal else 'NO ' + str(out['counts'])}"
        )
    return same


if __name__ == "__main__":
    main()
