.PHONY: demo test bootstrap

bootstrap:
	@bash scripts/bootstrap.sh

# Two local deployments on loopback; the downstream waits for the upstream and fires.
demo: bootstrap
	.venv/bin/python scripts/demo.py

# Unit tests plus integration tests against real Airflow upstreams (every minor 2.9-3.3) and real
# downstream deployments (3.0.6 to 3.3.2 on PostgreSQL, two triggerers from 3.2); then check that the
# README's "Supported versions" table says exactly what this run proved.
test: bootstrap
	bash scripts/postgres.sh  # the downstream test deployments' metadata DB (PostgreSQL, as in production)
	rm -f .tmp/version-matrix.json  # the table is checked against this run's matrix, never an earlier one's
	.venv/bin/python -m pytest -ra
	.venv/bin/python scripts/versions_table.py --check
