#!/usr/bin/env bash
# Build (once) the Airflow version matrix under .venvs/airflow-<version>, each resolved as of its
# release date: an old Airflow installed with today's dependencies is broken (e.g. 3.0.6 with
# PyJWT 2.15 answers 500 on /auth/token). Release dates are PyPI upload dates of the wheel; the
# cutoff leaves a few days for the companion packages (task SDK, providers) released with it.
#
#   2.9.3, 2.10.5          upstreams (API v1) with the FAB provider for basic auth
#   3.0.6, 3.1.8, 3.2.2    upstreams (API v2), and downstreams: the library and its test extras are
#                          installed the way users install it (normal resolution, same cutoff), except
#                          apache-airflow-providers-common-compat, which is always the newest.
# 2.11.2 (.venv-airflow2) and 3.3.2 (.venv) come from bootstrap.sh.
# A venv is rebuilt only when its recipe (or pyproject.toml, for downstreams) changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
uv() { "$PY" -m uv "$@"; }

# version | cutoff (exclude-newer) | extra requirements | downstream (library installed)?
MATRIX=(
  "2.9.3|2024-07-20|apache-airflow-providers-fab<2|no"
  "2.10.5|2025-02-15|apache-airflow-providers-fab<2|no"
  "3.0.6|2025-09-05||yes"
  "3.1.8|2026-03-15||yes"
  "3.2.2|2026-06-03||yes"
)

build() {
  local version=$1 cutoff=$2 extra=$3 downstream=$4 dir=".venvs/airflow-$1"
  local args=("apache-airflow==$version") recipe
  [ -n "$extra" ] && args+=("$extra")
  if [ "$downstream" = yes ]; then
    args+=(-e ".[test]" --exclude-newer-package "apache-airflow-providers-common-compat=2100-01-01")
    recipe="$version $cutoff $extra $(sha256sum pyproject.toml | cut -c1-16)"
  else
    recipe="$version $cutoff $extra"
  fi
  if [ -x "$dir/bin/airflow" ] && [ "$(cat "$dir/.xdep-recipe" 2>/dev/null)" = "$recipe" ]; then
    return 0
  fi
  local t0=$SECONDS
  rm -rf "$dir"
  uv venv --quiet --python "$PY" "$dir"
  uv pip install --quiet --python "$dir/bin/python" --exclude-newer "$cutoff" "${args[@]}"
  echo "$recipe" > "$dir/.xdep-recipe"
  echo "matrix: built $dir in $((SECONDS - t0)) s"
}

mkdir -p .venvs
pids=()
for row in "${MATRIX[@]}"; do
  IFS='|' read -r version cutoff extra downstream <<<"$row"
  build "$version" "$cutoff" "$extra" "$downstream" > ".venvs/build-$version.log" 2>&1 &
  pids+=("$!:$version")
done
failed=0
for entry in "${pids[@]}"; do
  if ! wait "${entry%%:*}"; then
    echo "matrix: building Airflow ${entry#*:} failed:" >&2
    cat ".venvs/build-${entry#*:}.log" >&2
    failed=1
  else
    cat ".venvs/build-${entry#*:}.log"
  fi
done
exit "$failed"
