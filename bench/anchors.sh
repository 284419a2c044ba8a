#!/usr/bin/env bash
# Install benchmark anchors (the tools loopstack is measured against), each in
# its own virtualenv under bench/.anchors/<name>, so their dependency pins never
# touch loopstack's .venv.
#
#   bash bench/anchors.sh            # install every anchor
#   bash bench/anchors.sh mlflow     # install one (or several: mlflow feast)
#   bash bench/anchors.sh --list     # names this script knows
#
# Idempotent: an anchor whose venv already holds its packages is skipped.
# ANCHORS_UPGRADE=1 reinstalls at the latest PyPI versions.
# ANCHORS_PYTHON picks the interpreter (default: python3.11, else python3).
#
# Adding an anchor: write `anchor_<name>() { install <name> <pip requirement>...; }`
# below; the first requirement's installed version is written to
# bench/.anchors/<name>/VERSION for RESULTS.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ANCHORS="$HERE/.anchors"
PYTHON="${ANCHORS_PYTHON:-$(command -v python3.11 || command -v python3)}"

# install NAME REQUIREMENT... : create bench/.anchors/NAME and pip install the requirements.
install() {
    local name="$1"; shift
    local venv="$ANCHORS/$name"
    local stamp="$venv/.installed"
    local wanted="$*"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" && "${ANCHORS_UPGRADE:-0}" != 1 ]]; then
        echo "anchor $name: already installed ($(cat "$venv/VERSION" 2>/dev/null || echo '?')) in $venv"
        return 0
    fi
    echo "anchor $name: installing $wanted into $venv"
    mkdir -p "$ANCHORS"
    [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$@"
    local dist="${1%%[<>=\[]*}"
    "$venv/bin/python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$dist" > "$venv/VERSION"
    echo "$wanted" > "$stamp"
    echo "anchor $name: $dist $(cat "$venv/VERSION")"
}

# --- anchors (one function each; latest PyPI versions unless pinned) -----------
anchor_mlflow()             { install mlflow mlflow; }
anchor_feast()              { install feast "feast[duckdb,redis]"; }
anchor_evidently()          { install evidently evidently "pandas<3" pyarrow; }  # evidently 0.7 imports pandas 2 internals
anchor_great_expectations() { install great_expectations great_expectations pyarrow; }
anchor_pandera()            { install pandera pandera pandas pyarrow; }
anchor_bentoml()            { install bentoml bentoml scikit-learn; }  # serving bench: same model in every anchor
anchor_kserve()             { install kserve kserve scikit-learn; }
anchor_fastapi()            { install fastapi fastapi "uvicorn[standard]" scikit-learn threadpoolctl; }
anchor_river()              { install river river; }
anchor_growthbook()         { install growthbook growthbook gbstats; }  # assignment hashing (SDK) and sequential stats (gbstats)
anchor_prefect()            { install prefect prefect; }  # pipelines bench: per-task overhead and cached re-runs

known() { declare -F | awk '{print $3}' | sed -n 's/^anchor_//p'; }

main() {
    if [[ "${1:-}" == "--list" ]]; then known; return; fi
    local names=("$@")
    if [[ ${#names[@]} -eq 0 ]]; then mapfile -t names < <(known); fi
    local failed=()
    for name in "${names[@]}"; do
        if ! declare -F "anchor_$name" > /dev/null; then
            echo "unknown anchor '$name'; known: $(known | tr '\n' ' ')" >&2
            return 2
        fi
        "anchor_$name" || failed+=("$name")
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        echo "failed to install: ${failed[*]}" >&2
        return 1
    fi
}

# one line, so bash has parsed it before running it: others edit this file while installs run
main "$@"; exit $?
