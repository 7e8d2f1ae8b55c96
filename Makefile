.PHONY: demo test bootstrap

bootstrap:
	@bash scripts/bootstrap.sh

# Two local deployments on loopback; the downstream waits for the upstream and fires.
demo: bootstrap
	.venv/bin/python scripts/demo.py

# Unit tests plus integration tests against real Airflow 3.3 and 2.11 upstreams.
test: bootstrap
	.venv/bin/python -m pytest -ra
