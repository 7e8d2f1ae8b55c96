#!/usr/bin/env bash
# Install everything the tests need, on a fresh machine, idempotently:
#   .venv           the library + Airflow 3.3.2 (downstream, and the Airflow 3 upstream) + test tools
#   .venv-airflow2  Airflow 2.11.2 + FAB provider (the Airflow 2 upstream, API v1)
#   .venvs/airflow-<version>   the version matrix (scripts/matrix_venvs.sh): older upstreams, and
#                              Airflow 3.0.6 / 3.1.8 / 3.2.2 with the library installed as a downstream
#   /usr/bin/chromium          Debian's Chromium, for the Remote dependencies page's browser test
# With --demo (`make demo`), only .venv: the demo runs both its deployments from it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEMO_ONLY=no
case "${1:-}" in
  "") ;;
  --demo) DEMO_ONLY=yes ;;
  *) echo "usage: bash scripts/bootstrap.sh [--demo]" >&2; exit 2 ;;
esac

if ! "$PY" -m uv --version >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --disable-pip-version-check uv
fi
uv() { "$PY" -m uv "$@"; }

if [ ! -x .venv/bin/python ]; then
  uv venv --quiet --python "$PY" .venv
fi
# 3.3.2 is the highest Airflow version the suite proves; pyproject only sets the floor.
uv pip install --quiet --python .venv/bin/python -e ".[test,bench,docs,lint,amazon,google]" "apache-airflow==3.3.2"

if [ "$DEMO_ONLY" = yes ]; then
  echo "bootstrap (demo): $(.venv/bin/airflow version 2>/dev/null | tail -1) in .venv"
  exit 0
fi

if [ ! -x .venv-airflow2/bin/airflow ]; then
  uv venv --quiet --python "$PY" .venv-airflow2
  uv pip install --quiet --python .venv-airflow2/bin/python "apache-airflow==2.11.2" apache-airflow-providers-fab
fi
echo "bootstrap: $(.venv/bin/airflow version 2>/dev/null | tail -1) in .venv, $(.venv-airflow2/bin/airflow version 2>/dev/null | tail -1) in .venv-airflow2"

PYTHON="$PY" bash scripts/matrix_venvs.sh

# Debian's Chromium for the Remote dependencies page's browser test (Playwright drives it; it never
# downloads a browser).
if [ ! -x /usr/bin/chromium ]; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q chromium chromium-driver >/dev/null \
    || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q chromium chromium-driver >/dev/null; }
fi
