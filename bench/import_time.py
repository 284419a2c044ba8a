"""Import time of loopstack (and of anchors) in fresh processes.

Each measurement starts a new interpreter, so nothing is cached in
``sys.modules``; the number is the wall time of the ``import`` statement
alone, read with ``time.perf_counter`` inside that process. The median of
several processes is reported because a loaded machine makes single runs noisy.

Run::

    .venv/bin/python bench/import_time.py                 # loopstack modules
    .venv/bin/python bench/import_time.py --anchor mlflow # plus `import mlflow`
    .venv/bin/python bench/import_time.py --breakdown loopstack.tracking.store  # -X importtime top 15

The goal from issue 2 is ``import loopstack`` under 0.3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOOPSTACK_PYTHON = ROOT / ".venv" / "bin" / "python"
GOAL_S = 0.3
MODULES = ("loopstack", "loopstack.cli", "loopstack.tracking", "loopstack.core.project", "loopstack.tracking.store")

_PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def anchor_python(name: str) -> Path:
    """The interpreter of an anchor's venv (see bench/anchors.sh)."""
    python = HERE / ".anchors" / name / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"anchor {name!r} is not installed; run `bash bench/anchors.sh {name}`")
    return python


def import_seconds(python: Path | str, module: str, repeat: int = 5) -> list[float]:
    """Wall seconds of `import module` in `repeat` fresh processes of `python`."""
    times = []
    for _ in range(repeat):
        out = subprocess.run(
            [str(python), "-c", _PROBE.format(module=module)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout
        times.append(float(out.strip().splitlines()[-1]))
    return times


def breakdown(python: Path | str, module: str, top: int = 15) -> list[tuple[float, str]]:
    """The slowest imports (cumulative seconds, name) under ``-X importtime``."""
    err = subprocess.run(
        [str(python), "-X", "importtime", "-c", f"import {module}"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stderr
    rows = []
    for line in err.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--anchor", action="append", default=[], help="also time `import <anchor>` in its venv")
    parser.add_argument("--breakdown", metavar="MODULE", help="print the slowest imports under `import MODULE`")
    args = parser.parse_args()
    rows = [(module, str(LOOPSTACK_PYTHON), module) for module in MODULES]
    rows += [(name, str(anchor_python(name)), name) for name in args.anchor]
    print("| import | median s | min s | max s | runs |\n|---|---:|---:|---:|---:|")
    for label, python, module in rows:
        times = import_seconds(python, module, args.repeat)
        median = statistics.median(times)
        flag = " (goal < 0.3 s: missed)" if label == "loopstack" and median >= GOAL_S else ""
        print(f"| `import {label}`{flag} | {median:.3f} | {min(times):.3f} | {max(times):.3f} | {len(times)} |")
    if args.breakdown:
        print(f"\nslowest imports under `import {args.breakdown}` (cumulative s):")
        for seconds, name in breakdown(LOOPSTACK_PYTHON, args.breakdown):
            print(f"  {seconds:7.3f}  {name}")


if __name__ == "__main__":
    sys.exit(main())
