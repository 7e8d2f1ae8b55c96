.PHONY: demo test bootstrap bootstrap-demo docs check

# One name per `make test` run: the generated tables are checked against what this run recorded.
RUN := $(shell date +%Y%m%dT%H%M%S)-$(shell echo $$$$)

# Everything `make test` needs: .venv, .venv-airflow2, the version matrix (.venvs/), Chromium.
bootstrap:
	@bash scripts/bootstrap.sh

# Only what the demo needs: .venv (the library + Airflow 3.3.2); no Airflow 2, matrix or browser.
bootstrap-demo:
	@bash scripts/bootstrap.sh --demo

# Two local deployments on loopback; the downstream waits for the upstream and fires.
demo: bootstrap-demo
	.venv/bin/python scripts/demo.py

# Unit tests plus integration tests against real Airflow upstreams (every minor 2.9-3.3) and real
# downstream deployments (3.0.6 to 3.3.2 on PostgreSQL, two triggerers from 3.2); then check that the
# "Supported versions" table of the docs says exactly what this run proved; build the docs (strict).
test: bootstrap check docs
	bash scripts/postgres.sh  # the downstream test deployments' metadata DB (PostgreSQL, as in production)
	rm -f .tmp/version-matrix.json .tmp/fault-matrix.json  # the tables are checked against this run's results only
	# at 75 min, SIGINT: pytest stops its deployments and prints what failed and why before CI's 90 min end it
	XDEP_TEST_RUN=$(RUN) timeout -s INT -k 120 4500 .venv/bin/python -m pytest -ra
	.venv/bin/python scripts/versions_table.py --check --run $(RUN)
	.venv/bin/python scripts/fault_table.py --check

# The documentation site (mkdocs.yml, docs/), strict: a broken link or anchor, a page missing from the
# navigation or a docstring reference that no longer resolves is an error.
docs: bootstrap
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir .tmp/site  # the banner: see docs/development.md

# Style, complexity (C901), formatting, types and layers: the code as docs/development.md describes it.
LINTED := xdep_sensors tests scripts benchmarks devtools example_dags
check: bootstrap
	.venv/bin/ruff check $(LINTED)
	.venv/bin/ruff format --check $(LINTED)
	.venv/bin/mypy
	.venv/bin/lint-imports
