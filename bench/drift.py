"""Column drift: loopstack.drift.compare against Evidently's DataDriftPreset on the same Parquet files.

    .venv/bin/python bench/drift.py                      # 100k rows per side, both tools
    .venv/bin/python bench/drift.py --rows 1000000       # add --no-anchor to skip Evidently

Reference and current: N rows x 20 numerical + 5 categorical columns (10
categories each). In the current sample, five numerical columns move (a small
and a large mean shift, a moderate shift, a variance change, a shape change
at equal mean and variance) and one categorical column is re-weighted.

Each tool runs in its own process (Evidently in bench/.anchors/evidently, see
bench/anchors.sh), timed from reading the Parquet files to the verdicts, and
reports its peak RSS. The script then checks that both ran the same test on
each column, flagged the same columns and agree on every score to 1e-6.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "drift"
ANCHOR = ROOT / ".anchors" / "evidently" / "bin" / "python"
N_NUM, N_CAT, N_LEVELS = 20, 5, 10
TOLERANCE = 1e-6

EVIDENTLY_NAMES = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "PSI": "psi",
}

# Peak RSS from /proc/self/status VmHWM: ru_maxrss survives exec, so it would include this parent's peak.
PEAK = r"""
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

LOOPSTACK_CHILD = PEAK + r"""
import json, sys, time
t0 = time.perf_counter()
from loopstack.drift import compare
import pyarrow.dataset, pyarrow.parquet, scipy.special, scipy.stats  # loaded lazily; Evidently's imports load them too
base = peak_mb()
t = time.perf_counter()
result = compare(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - t
columns = {n: {"test": c.test, "score": c.score, "drifted": c.drifted} for n, c in result.columns.items()}
print(json.dumps({"seconds": seconds, "import_seconds": t - t0, "base_rss_mb": base,
                  "peak_rss_mb": peak_mb(), "columns": columns}))
"""

EVIDENTLY_CHILD = PEAK + r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
base = peak_mb()
t = time.perf_counter()
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
definition = DataDefinition(numerical_columns=[c for c in ref.columns if c.startswith("num")],
                            categorical_columns=[c for c in ref.columns if c.startswith("cat")])
snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=definition),
                                           Dataset.from_pandas(ref, data_definition=definition))
seconds = time.perf_counter() - t
columns, count = {}, None
for metric in snapshot.dict()["metrics"]:
    config = metric["config"]
    if config["type"].endswith("ValueDrift"):
        columns[config["column"]] = {"method": config["method"], "threshold": config["threshold"],
                                     "score": metric["value"]}
    elif config["type"].endswith("DriftedColumnsCount"):
        count = metric["value"]["count"]
print(json.dumps({"seconds": seconds, "import_seconds": t - t0, "base_rss_mb": base,
                  "peak_rss_mb": peak_mb(), "columns": columns, "n_drifted": count}))
"""


def make_data(rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Write reference.parquet and current.parquet with the planted shifts (cached per size)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = WORK / str(rows)
    ref_path, cur_path = folder / "reference.parquet", folder / "current.parquet"
    if ref_path.exists() and cur_path.exists():
        return ref_path, cur_path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    means, scales = rng.uniform(-5, 5, N_NUM), rng.uniform(0.5, 3, N_NUM)
    shares = rng.dirichlet(np.full(N_LEVELS, 2.0), N_CAT)
    levels = [np.array([f"c{j}_v{k}" for k in range(N_LEVELS)]) for j in range(N_CAT)]

    def sample(shifted: bool) -> pa.Table:
        columns = {}
        for j in range(N_NUM):
            x = rng.normal(size=rows)
            if shifted and j == 0:
                x = x + 0.05  # small mean shift
            elif shifted and j == 1:
                x = x + 1.0  # large mean shift
            elif shifted and j == 2:
                x = x * 1.5  # variance change
            elif shifted and j == 3:
                x = rng.exponential(size=rows) - 1.0  # shape change, same mean and variance
            elif shifted and j == 4:
                x = x + 0.2  # moderate mean shift
            columns[f"num_{j:02d}"] = means[j] + scales[j] * x
        for j in range(N_CAT):
            p = shares[j][::-1] if shifted and j == 0 else shares[j]  # re-weighted categories
            columns[f"cat_{j}"] = levels[j][rng.choice(N_LEVELS, rows, p=p)]
        return pa.table(columns)

    pq.write_table(sample(False), ref_path)
    pq.write_table(sample(True), cur_path)
    return ref_path, cur_path


def run_child(python: str, code: str, ref: Path, cur: Path, timeout: int) -> dict:
    done = subprocess.run([python, "-c", code, str(ref), str(cur)], capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise SystemExit(f"{python} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_same(ours: dict, theirs: dict) -> list[str]:
    """Differences between the two tools' tests, scores and verdicts (empty when they agree)."""
    from loopstack.drift.select import TESTS

    problems = []
    for name, mine in ours["columns"].items():
        other = theirs["columns"].get(name)
        if other is None:
            problems.append(f"{name}: Evidently did not test it")
            continue
        test = EVIDENTLY_NAMES.get(other["method"], other["method"])
        drifted = TESTS[test].drifted(other["score"], other["threshold"]) if test in TESTS else None
        if test != mine["test"]:
            problems.append(f"{name}: tests differ ({mine['test']} vs {test})")
        if abs(mine["score"] - other["score"]) > TOLERANCE:
            problems.append(f"{name}: scores differ ({mine['score']!r} vs {other['score']!r})")
        if drifted != mine["drifted"]:
            problems.append(f"{name}: verdicts differ ({mine['drifted']} vs {drifted})")
    n_drifted = sum(c["drifted"] for c in ours["columns"].values())
    if theirs.get("n_drifted") is not None and n_drifted != theirs["n_drifted"]:
        problems.append(f"drifted column count differs ({n_drifted} vs {theirs['n_drifted']})")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per side")
    parser.add_argument("--no-anchor", action="store_true", help="skip Evidently")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per tool")
    args = parser.parse_args()
    ref, cur = make_data(args.rows)
    ours = run_child(sys.executable, LOOPSTACK_CHILD, ref, cur, args.timeout)
    flagged = sorted(n for n, c in ours["columns"].items() if c["drifted"])
    print(f"rows per side: {args.rows:,}; columns: {len(ours['columns'])}")
    print(f"loopstack  {ours['seconds']:8.3f} s  peak RSS {ours['peak_rss_mb']:7.0f} MiB "
          f"(after imports {ours['base_rss_mb']:.0f})  flagged {flagged}")
    if args.no_anchor:
        return
    if not ANCHOR.exists():
        raise SystemExit("Evidently is not installed: run `bash bench/anchors.sh evidently` first")
    theirs = run_child(str(ANCHOR), EVIDENTLY_CHILD, ref, cur, args.timeout)
    print(f"evidently  {theirs['seconds']:8.3f} s  peak RSS {theirs['peak_rss_mb']:7.0f} MiB "
          f"(after imports {theirs['base_rss_mb']:.0f})  drifted {theirs['n_drifted']}")
    print(f"speed-up {theirs['seconds'] / ours['seconds']:.1f}x; "
          f"peak memory {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f} of Evidently's")
    problems = check_same(ours, theirs)
    if problems:
        raise SystemExit("answers differ:\n  " + "\n  ".join(problems))
    worst = max(abs(ours["columns"][n]["score"] - theirs["columns"][n]["score"]) for n in ours["columns"])
    print(f"same tests, same {len(flagged)} columns flagged, largest score difference {worst:.2e}")


if __name__ == "__main__":
    main()
