"""Stream change detectors: detection delay and false alarms, loopstack vs River on the same streams.

    .venv/bin/python bench/stream_drift.py            # needs `bash bench/anchors.sh river`

Streams (10 seeds each, 10,000 values, change at 5,000 where there is one):
  abrupt    N(0, 1) then N(1.5, 1)                     -> ADWIN, Page-Hinkley
  gradual   mean ramps from 0 to 1.5 over 2,000 values  -> ADWIN, Page-Hinkley
  none      N(0, 1) throughout                          -> false alarms only
  errors    0/1 errors at rate 0.1 then 0.3 (abrupt), a 2,000-value ramp (gradual), or 0.1 throughout -> DDM

Both libraries run with River's default parameters. A detection before the
change is a false alarm; the delay is from the change to the first detection
at or after it. The script prints both tools side by side and how many of the
streams got exactly the same detections.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "stream_drift"
ANCHOR = ROOT / ".anchors" / "river" / "bin" / "python"
N, CHANGE, RAMP, SEEDS = 10_000, 5_000, 2_000, 10

RIVER_CHILD = r"""
import json, sys, time
import numpy as np
from river import drift
streams = np.load(sys.argv[1])
make = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley, "ddm": drift.binary.DDM}
out, seconds = {}, {}
for key in streams.files:
    detector_name = key.split("/")[0]
    detector, values = make[detector_name](), streams[key].tolist()
    if detector_name == "ddm":
        values = [bool(v) for v in values]
    t = time.perf_counter()
    hits = []
    for i, x in enumerate(values):
        detector.update(x)
        if detector.drift_detected:
            hits.append(i)
    seconds[detector_name] = seconds.get(detector_name, 0.0) + time.perf_counter() - t
    out[key] = hits
print(json.dumps({"seconds": seconds, "hits": out}))
"""


def make_streams() -> dict[str, np.ndarray]:
    """Every stream, keyed 'detector/kind/seed'."""
    streams = {}
    ramp = np.r_[np.zeros(CHANGE), np.linspace(0, 1, RAMP), np.ones(N - CHANGE - RAMP)]
    step = np.r_[np.zeros(CHANGE), np.ones(N - CHANGE)]
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        noise = rng.normal(size=N)
        uniform = rng.uniform(size=N)
        for detector in ("adwin", "page_hinkley"):
            streams[f"{detector}/abrupt/{seed}"] = noise + 1.5 * step
            streams[f"{detector}/gradual/{seed}"] = noise + 1.5 * ramp
            streams[f"{detector}/none/{seed}"] = noise
        streams[f"ddm/abrupt/{seed}"] = (uniform < 0.1 + 0.2 * step).astype(np.float64)
        streams[f"ddm/gradual/{seed}"] = (uniform < 0.1 + 0.2 * ramp).astype(np.float64)
        streams[f"ddm/none/{seed}"] = (uniform < 0.1).astype(np.float64)
    return streams


def run_loopstack(streams: dict[str, np.ndarray]) -> tuple[dict[str, list[int]], dict[str, float]]:
    """Detections per stream, and seconds per detector (`detect` feeds a whole stream to `update_many`)."""
    from loopstack.drift import ADWIN, DDM, PageHinkley, detect

    make = {"adwin": ADWIN, "page_hinkley": PageHinkley, "ddm": DDM}
    hits: dict[str, list[int]] = {}
    seconds: dict[str, float] = {}
    for key, values in streams.items():
        data = values.tolist()
        name = key.split("/")[0]
        started = time.perf_counter()
        hits[key] = detect(make[name](), data)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
    return hits, seconds


def summarize(hits: dict[str, list[int]]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (detector, stream kind): mean delay, streams detected, false alarms."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    for key, found in hits.items():
        detector, kind, _ = key.split("/")
        row = table.setdefault((detector, kind), {"delays": [], "detected": 0, "false_alarms": 0})
        cut = CHANGE if kind != "none" else N
        row["false_alarms"] += sum(1 for h in found if h < cut)
        after = [h for h in found if h >= cut]
        if kind != "none" and after:
            row["detected"] += 1
            row["delays"].append(after[0] - CHANGE)
    for row in table.values():
        delays = row.pop("delays")
        row["mean_delay"] = float(np.mean(delays)) if delays else float("nan")
    return table


def main() -> None:
    streams = make_streams()
    ours, our_seconds = run_loopstack(streams)
    if not ANCHOR.exists():
        raise SystemExit("River is not installed: run `bash bench/anchors.sh river` first")
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "streams.npz"
    np.savez(path, **streams)
    done = subprocess.run([str(ANCHOR), "-c", RIVER_CHILD, str(path)], capture_output=True, text=True, check=True)
    river = json.loads(done.stdout)
    mine, theirs = summarize(ours), summarize(river["hits"])
    print(f"{len(streams)} streams of {N:,} values, change at {CHANGE:,}; River's default parameters for both")
    print(f"{'detector':13} {'stream':8} {'detected':>17} {'mean delay':>19} {'false alarms':>15} {'same hits':>10}")
    for key in sorted(mine):
        a, b = mine[key], theirs[key]
        same = sum(ours[k] == river["hits"][k] for k in streams if k.startswith(f"{key[0]}/{key[1]}/"))
        print(f"{key[0]:13} {key[1]:8} {a['detected']:>7.0f} / {b['detected']:<7.0f}  "
              f"{a['mean_delay']:>8.1f} / {b['mean_delay']:<8.1f}  "
              f"{a['false_alarms']:>6.0f} / {b['false_alarms']:<6.0f}  {same:>4} / {SEEDS}")
    print("(loopstack / river)")
    for name in sorted(our_seconds):
        ours_s, theirs_s = our_seconds[name], river["seconds"][name]
        print(f"time {name:13} loopstack {ours_s:.3f} s, river {theirs_s:.3f} s: {theirs_s / ours_s:.2f}x")
    total, river_total = sum(our_seconds.values()), sum(river["seconds"].values())
    print(f"time over all streams: loopstack {total:.2f} s, river {river_total:.2f} s: {river_total / total:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
