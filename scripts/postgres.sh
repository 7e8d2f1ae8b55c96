#!/usr/bin/env bash
# Start the machine's PostgreSQL 15 (Debian's, stopped on a fresh machine) and create the role the
# test suite's downstream deployments use (LOGIN CREATEDB; each deployment creates its own database,
# see devtools/postgres.py). Idempotent. Run by bootstrap.sh.
set -euo pipefail
ROLE="${XDEP_PG_ROLE:-xdep}"
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then su postgres -c "$1"; else sudo -n -u postgres bash -c "$1"; fi
}
if ! command -v pg_ctlcluster >/dev/null; then
  echo "postgres: pg_ctlcluster not found: install Debian's postgresql (15) first" >&2
  exit 1
fi
cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2" "$4}')
read -r version name status <<<"$cluster"
if [ "$status" != "online" ]; then
  pg_ctlcluster "$version" "$name" start
fi
if ! as_postgres "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='$ROLE'\"" | grep -q 1; then
  as_postgres "psql -q -c \"CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$ROLE'\""
fi
echo "postgres: cluster $version/$name online, role $ROLE ready"
